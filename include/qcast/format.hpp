// A format = element format + how values are scaled onto it. The named formats (mxfp4, nvfp4,
// int4@g128, ...) are values of this type; see format_names.hpp for the text form.
#pragma once
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include "qcast/element.hpp"

namespace qcast {

enum class Granularity : std::uint8_t {
  element,  // direct value conversion, no scale at all
  tensor,   // one scale for the whole tensor
  channel,  // one scale per index of `axis` (e.g. an output channel of a weight)
  block,    // one scale per `block_size` consecutive elements along `axis`
};

enum class ScaleRule : std::uint8_t {
  // Power-of-two scales (exponent-only scale formats such as e8m0):
  floor,  // OCP MX v1.0 §6.3: 2^(floor(log2 amax) - emax_elem); the top values may clip
  ceil,   // smallest 2^k with amax / 2^k <= max_elem, computed exactly: never clips
  rceil,  // amax / max_elem in binary32, rounded up to a power of two (NVIDIA's cvt.rp.ue8m0)
  even,   // amax rounded to the element's precision (ties to even) first, then floor
  // Float scales (fp32, ue4m3, bf16, ...):
  amax,   // amax / max_elem in binary32, rounded to the scale format (ties to even, saturating)
};

struct Format {
  ElementFormat element = elements::fp32;
  Granularity granularity = Granularity::element;
  int block_size = 0;         // block granularity only
  int axis = -1;              // channel and block granularity; negative counts from the end
  bool tensor_scale = false;  // block granularity: a binary32 tensor scale above the block scales
  ElementFormat scale = elements::fp32;
  ScaleRule rule = ScaleRule::amax;

  static Format direct(const ElementFormat& e) {
    Format f;
    f.element = e;
    return f;
  }
  static Format per_tensor(const ElementFormat& e, const ElementFormat& scale = elements::fp32) {
    Format f = scaled(e, scale);
    f.granularity = Granularity::tensor;
    return f;
  }
  static Format per_channel(const ElementFormat& e, int axis = 0, const ElementFormat& scale = elements::fp32) {
    Format f = scaled(e, scale);
    f.granularity = Granularity::channel;
    f.axis = axis;
    return f;
  }
  static Format per_block(const ElementFormat& e, int block_size, const ElementFormat& scale = elements::fp32,
                          int axis = -1) {
    Format f = scaled(e, scale);
    f.granularity = Granularity::block;
    f.block_size = block_size;
    f.axis = axis;
    return f;
  }
  // OCP MX v1.0: blocks of 32 along the last axis, e8m0 scale, floor rule.
  static Format mx(const ElementFormat& e) { return per_block(e, 32, elements::e8m0); }
  // NVFP4: fp4_e2m1 in blocks of 16 with ue4m3 block scales under a binary32 tensor scale.
  static Format nvfp4() {
    Format f = per_block(elements::fp4_e2m1, 16, elements::ue4m3);
    f.tensor_scale = true;
    return f;
  }
  // NVINT4: NVFP4's two-level scaling over int4 elements (max 7, narrow range): blocks of 16, ue4m3
  // block scales, a binary32 tensor scale.
  static Format nvint4() {
    Format f = per_block(ElementFormat::integer(4), 16, elements::ue4m3);
    f.tensor_scale = true;
    return f;
  }

  bool is_scaled() const { return granularity != Granularity::element; }
  bool has_axis() const { return granularity == Granularity::channel || granularity == Granularity::block; }
  static ScaleRule default_rule(const ElementFormat& scale) {
    return scale.kind == ElementKind::exponent ? ScaleRule::floor : ScaleRule::amax;
  }
  static int default_axis(Granularity g) { return g == Granularity::channel ? 0 : -1; }
  // Scale codes are stored byte-aligned: a ue4m3 scale takes the byte of an e4m3 with sign 0.
  int scale_storage_bits() const { return (scale.bits() + 7) / 8 * 8; }
  // Storage per element, scales included (the tensor scale of a two-level format is ignored).
  double bits_per_element() const {
    if (granularity == Granularity::block) return element.bits() + double(scale_storage_bits()) / block_size;
    return element.bits();
  }

  std::string invalid_reason() const {
    std::string why = element.invalid_reason();
    if (!why.empty()) return "element: " + why;
    if (!is_scaled()) return {};
    why = scale.invalid_reason();
    if (!why.empty()) return "scale: " + why;
    if (granularity == Granularity::block && (block_size < 1 || block_size > (1 << 20)))
      return "block size must be 1..1048576";
    if (tensor_scale && granularity != Granularity::block) return "a tensor scale needs block granularity";
    if (tensor_scale && scale.kind == ElementKind::exponent) return "two-level scaling needs a float block scale";
    // s_t = amax_t / float(max_elem * max_scale): where that product overflows binary32 (binary32 or
    // bfloat16 block scales over elements larger than 1), s_t is 0 for every tensor and every output
    // NaN. docs/design/0001-format-model.md says why such formats are rejected rather than redefined.
    if (tensor_scale && !(float(element.max_value() * scale.max_value()) < std::numeric_limits<float>::infinity()))
      return "two-level scaling needs max_elem * max_scale within binary32, or s_t = amax_t / (max_elem * "
             "max_scale) is 0 for every tensor; use a narrower block scale such as ue4m3";
    const bool pow2_scale = scale.kind == ElementKind::exponent;
    if (pow2_scale && rule == ScaleRule::amax) return "power-of-two scales take rule floor, ceil, rceil or even";
    if (!pow2_scale && rule != ScaleRule::amax) return "float scales take rule amax";
    if (scale.kind == ElementKind::integer) return "scales must be float or power-of-two formats";
    return {};
  }
  void validate() const {
    const std::string why = invalid_reason();
    if (!why.empty()) throw std::invalid_argument("invalid format: " + why);
  }

  friend bool operator==(const Format& a, const Format& b) {
    if (a.element != b.element || a.granularity != b.granularity) return false;
    if (!a.is_scaled()) return true;
    if (a.scale != b.scale || a.rule != b.rule) return false;
    if (a.has_axis() && a.axis != b.axis) return false;
    return a.granularity != Granularity::block || (a.block_size == b.block_size && a.tensor_scale == b.tensor_scale);
  }
  friend bool operator!=(const Format& a, const Format& b) { return !(a == b); }

 private:
  static Format scaled(const ElementFormat& e, const ElementFormat& scale) {
    Format f;
    f.element = e;
    f.scale = scale;
    f.rule = default_rule(scale);
    return f;
  }
};

}  // namespace qcast
