// Everything of the format core (no LibTorch).
#pragma once
#include "qcast/cast.hpp"
#include "qcast/element.hpp"
#include "qcast/element_codec.hpp"
#include "qcast/format.hpp"
#include "qcast/format_names.hpp"
#include "qcast/npy.hpp"
#include "qcast/packing.hpp"
#include "qcast/rounding.hpp"
#include "qcast/scaling.hpp"
