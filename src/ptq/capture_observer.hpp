// A test seam: when set, the engine passes every site's captured inputs to this function before it
// sums them, so a test can compare them with a run of the whole model from its input. Internal to
// src/ptq and its tests; not thread-safe (set it before quantize and reset it after).
#pragma once
#include <ATen/core/ivalue.h>

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

namespace qcast::ptq::detail {

using CaptureObserver = std::function<void(const std::string& layer, std::size_t site, std::size_t batch,
                                           const std::vector<c10::IValue>& float_inputs,
                                           const std::vector<c10::IValue>& quantized_inputs)>;
CaptureObserver& capture_observer();

}  // namespace qcast::ptq::detail
