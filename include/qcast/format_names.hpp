// Text form of formats. Grammar (docs/formats.md has the full table):
//
//   format      := element [ '@' granularity ] { ':' key '=' value }
//   element     := named element | 'int'N ['f'F] | 'uint'N ['f'F]
//                | ['u'] 'e'X 'm'Y [ 'fn' | 'fnuz' | 'nosp' ] [ 'b'BIAS ]   (Y = 0: power of two)
//   granularity := 'none' | 'tensor' | 'channel' | 'g'K | 'g'K '+tensor'
//   key         := 'scale' (an element) | 'rule' (floor|ceil|rceil|even|amax) | 'axis' (integer)
//
// A bare minifloat is a direct cast; a bare integer is scaled per tensor. Named formats
// (mxfp4, nvfp4, ...) are aliases: format_name() prints the alias whenever the value has one,
// otherwise the generic form with only non-default keys, and parse_format(format_name(f)) == f.
#pragma once
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qcast/format.hpp"

namespace qcast {

struct FormatError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

struct NamedElement {
  const char* name;
  ElementFormat element;
};

inline const std::vector<NamedElement>& named_elements() {
  static const std::vector<NamedElement> list = {
      {"fp8_e4m3", elements::fp8_e4m3}, {"fp8_e5m2", elements::fp8_e5m2},
      {"fp8_e4m3fnuz", elements::fp8_e4m3fnuz}, {"fp8_e5m2fnuz", elements::fp8_e5m2fnuz},
      {"fp6_e2m3", elements::fp6_e2m3}, {"fp6_e3m2", elements::fp6_e3m2},
      {"fp4_e2m1", elements::fp4_e2m1}, {"bf16", elements::bf16},
      {"fp16", elements::fp16}, {"fp32", elements::fp32},
      {"e8m0", elements::e8m0}, {"ue4m3", elements::ue4m3},
  };
  return list;
}

struct NamedFormat {
  std::string name;
  Format format;
};

// Every named format, in the order `qcast formats` lists them. intN@gK takes any K; the
// listing shows the common group sizes.
inline const std::vector<NamedFormat>& named_formats() {
  static const std::vector<NamedFormat> list = [] {
    std::vector<NamedFormat> v;
    for (const char* n : {"fp8_e4m3", "fp8_e5m2", "fp8_e4m3fnuz", "fp8_e5m2fnuz", "fp6_e2m3", "fp6_e3m2",
                          "fp4_e2m1", "bf16", "fp16"}) {
      for (const auto& e : named_elements())
        if (std::string_view(e.name) == n) v.push_back({n, Format::direct(e.element)});
    }
    v.push_back({"mxfp8_e4m3", Format::mx(elements::fp8_e4m3)});
    v.push_back({"mxfp8_e5m2", Format::mx(elements::fp8_e5m2)});
    v.push_back({"mxfp6_e2m3", Format::mx(elements::fp6_e2m3)});
    v.push_back({"mxfp6_e3m2", Format::mx(elements::fp6_e3m2)});
    v.push_back({"mxfp4", Format::mx(elements::fp4_e2m1)});
    v.push_back({"mxint8", Format::mx(elements::mxint8_element)});
    v.push_back({"nvfp4", Format::nvfp4()});
    v.push_back({"nvint4", Format::nvint4()});
    for (int n = 2; n <= 8; ++n) v.push_back({"int" + std::to_string(n), Format::per_tensor(ElementFormat::integer(n))});
    for (int n : {4, 8}) {
      for (int k : {32, 64, 128})
        v.push_back({"int" + std::to_string(n) + "@g" + std::to_string(k), Format::per_block(ElementFormat::integer(n), k)});
      v.push_back({"int" + std::to_string(n) + "@channel", Format::per_channel(ElementFormat::integer(n))});
    }
    return v;
  }();
  return list;
}

namespace detail {

inline const char* specials_suffix(Specials s) {
  switch (s) {
    case Specials::fn: return "fn";
    case Specials::fnuz: return "fnuz";
    case Specials::none: return "nosp";
    default: return "";
  }
}

inline const char* rule_name(ScaleRule r) {
  switch (r) {
    case ScaleRule::floor: return "floor";
    case ScaleRule::ceil: return "ceil";
    case ScaleRule::rceil: return "rceil";
    case ScaleRule::even: return "even";
    default: return "amax";
  }
}

inline std::string valid_names_hint() {
  std::string s = "valid names:";
  for (const auto& f : named_formats()) {
    if (f.name.find('@') != std::string::npos) continue;
    s += ' ';
    s += f.name;
  }
  s += " intN@gK intN@channel (N = 2..16); generic: eXmY[fn|fnuz|nosp][bBIAS][@none|tensor|channel|gK|gK+tensor]"
       "[:scale=E][:rule=floor|ceil|rceil|even|amax][:axis=A] (see docs/formats.md)";
  return s;
}

// Text from the user for an error message: at most 64 characters (a longer one says how long it is),
// printable ASCII, others as '?'.
inline std::string quoted_text(std::string_view text) {
  std::string q = "'";
  for (std::size_t i = 0; i < text.size() && i < 64; ++i) q += (text[i] >= 32 && text[i] < 127) ? text[i] : '?';
  if (text.size() <= 64) return q + "'";
  return q + "...' (" + std::to_string(text.size()) + " characters)";
}

[[noreturn]] inline void format_error(std::string_view text, const std::string& why) {
  throw FormatError("unknown format " + quoted_text(text) + ": " + why + "; " + valid_names_hint());
}

// Parses a non-negative decimal integer that is the whole of s, without leading zeros (one
// spelling a number, so one name a format); -1 if it is not one.
inline long parse_count(std::string_view s) {
  if (s.empty() || s.size() > 9 || (s.size() > 1 && s[0] == '0')) return -1;
  long v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  return v;
}

inline bool parse_element(std::string_view s, ElementFormat& out) {
  for (const auto& e : named_elements())
    if (s == e.name) {
      out = e.element;
      return true;
    }
  bool is_signed = true;
  if (s.rfind("uint", 0) == 0 || s.rfind("int", 0) == 0) {
    is_signed = s[0] == 'i';
    s.remove_prefix(is_signed ? 3 : 4);
    const auto f = s.find('f');
    const long bits = parse_count(s.substr(0, f));
    const long frac = f == std::string_view::npos ? 0 : parse_count(s.substr(f + 1));
    if (bits < 0 || frac < 0) return false;
    out = ElementFormat::integer(int(bits), is_signed, int(frac));
    return true;
  }
  if (!s.empty() && s[0] == 'u') {
    is_signed = false;
    s.remove_prefix(1);
  }
  if (s.empty() || s[0] != 'e') return false;
  s.remove_prefix(1);
  const auto m = s.find('m');
  if (m == std::string_view::npos) return false;
  const long ebits = parse_count(s.substr(0, m));
  s.remove_prefix(m + 1);
  std::size_t digits = 0;
  while (digits < s.size() && s[digits] >= '0' && s[digits] <= '9') ++digits;
  const long mbits = parse_count(s.substr(0, digits));
  s.remove_prefix(digits);
  if (ebits < 1 || ebits > 8 || mbits < 0) return false;
  Specials sp = Specials::ieee;
  if (s.rfind("fnuz", 0) == 0) sp = Specials::fnuz, s.remove_prefix(4);
  else if (s.rfind("fn", 0) == 0) sp = Specials::fn, s.remove_prefix(2);
  else if (s.rfind("nosp", 0) == 0) sp = Specials::none, s.remove_prefix(4);
  int bias = ElementFormat::default_bias(int(ebits));
  if (!s.empty()) {
    if (s[0] != 'b') return false;
    bool negative = s.size() > 1 && s[1] == '-';
    const long b = parse_count(s.substr(negative ? 2 : 1));
    if (b < 0) return false;
    bias = int(negative ? -b : b);
  }
  if (mbits == 0) {
    if (sp != Specials::ieee) return false;  // power-of-two formats have one fixed NaN policy
    out = ElementFormat::exponent(int(ebits), bias);
  } else {
    out = ElementFormat::minifloat(int(ebits), int(mbits), bias, sp, is_signed);
  }
  return true;
}

}  // namespace detail

inline std::string element_name(const ElementFormat& e) {
  for (const auto& n : named_elements())
    if (n.element == e) return n.name;
  std::string s;
  if (e.kind == ElementKind::integer) {
    s = (e.is_signed ? "int" : "uint") + std::to_string(e.integer_bits);
    if (e.fraction_bits) s += "f" + std::to_string(e.fraction_bits);
    return s;
  }
  if (e.kind == ElementKind::minifloat && !e.is_signed) s = "u";
  s += "e" + std::to_string(e.exponent_bits) + "m" + std::to_string(e.mantissa_bits);
  if (e.kind == ElementKind::minifloat) s += detail::specials_suffix(e.specials);
  bool explicit_bias = e.bias != ElementFormat::default_bias(e.exponent_bits);
  // A generic spelling that is a named element's name but not its value (ue4m3 with IEEE specials
  // against the named ue4m3) spells its bias out, so that the name parses back to this element.
  for (const auto& n : named_elements()) explicit_bias = explicit_bias || (n.name == s && !(n.element == e));
  if (explicit_bias) s += "b" + std::to_string(e.bias);
  return s;
}

inline std::string format_name(const Format& f) {
  for (const auto& n : named_formats())
    if (n.format == f) return n.name;
  std::string s = element_name(f.element);
  const bool int_element = f.element.kind == ElementKind::integer;
  switch (f.granularity) {
    case Granularity::element:
      if (int_element) s += "@none";
      return s;
    case Granularity::tensor:
      if (!int_element) s += "@tensor";
      break;
    case Granularity::channel: s += "@channel"; break;
    case Granularity::block:
      s += "@g" + std::to_string(f.block_size);
      if (f.tensor_scale) s += "+tensor";
      break;
  }
  // The scale a name without ':scale=' gets, as parse_format assigns it: ue4m3 under '+tensor'.
  const ElementFormat default_scale = f.tensor_scale ? elements::ue4m3 : elements::fp32;
  if (f.scale != default_scale) s += ":scale=" + element_name(f.scale);
  if (f.rule != Format::default_rule(f.scale)) s += std::string(":rule=") + detail::rule_name(f.rule);
  if (f.has_axis() && f.axis != Format::default_axis(f.granularity)) s += ":axis=" + std::to_string(f.axis);
  return s;
}

namespace detail {

// ELEMENT[@GRANULARITY] of a generic name (text is the whole name, for errors).
inline Format parse_format_head(std::string_view text, std::string_view head) {
  const auto at = head.find('@');
  ElementFormat element;
  if (!detail::parse_element(head.substr(0, at), element))
    detail::format_error(text, quoted_text(head.substr(0, at)) + " is neither a format name nor an element format");
  Format f;
  std::string_view gran = at == std::string_view::npos ? std::string_view{} : head.substr(at + 1);
  const bool int_element = element.kind == ElementKind::integer;
  if (gran.empty()) {
    if (at != std::string_view::npos) detail::format_error(text, "empty granularity after '@'");
    f = int_element ? Format::per_tensor(element) : Format::direct(element);
  } else if (gran == "none") {
    f = Format::direct(element);
  } else if (gran == "tensor") {
    f = Format::per_tensor(element);
  } else if (gran == "channel") {
    f = Format::per_channel(element);
  } else if (gran[0] == 'g') {
    bool two_level = false;
    std::string_view k = gran.substr(1);
    const auto plus = k.find('+');
    if (plus != std::string_view::npos) {
      if (k.substr(plus + 1) != "tensor") detail::format_error(text, "only '+tensor' may follow a block size");
      two_level = true;
      k = k.substr(0, plus);
    }
    const long size = detail::parse_count(k);
    if (size < 1) detail::format_error(text, "block size must be a positive integer");
    f = Format::per_block(element, int(size), two_level ? elements::ue4m3 : elements::fp32);
    f.tensor_scale = two_level;
  } else {
    detail::format_error(text, "granularity " + quoted_text(gran) + " is not none, tensor, channel, gK or gK+tensor");
  }
  return f;
}

// The ':key=value' options after the head, applied to f.
inline void parse_format_options(std::string_view text, std::string_view rest, Format& f) {
  bool rule_given = false;
  while (!rest.empty()) {
    const auto next = rest.find(':');
    const std::string_view kv = rest.substr(0, next);
    rest = next == std::string_view::npos ? std::string_view{} : rest.substr(next + 1);
    const auto eq = kv.find('=');
    const std::string_view key = kv.substr(0, eq);
    const std::string_view value = eq == std::string_view::npos ? std::string_view{} : kv.substr(eq + 1);
    if (!f.is_scaled()) detail::format_error(text, "a direct cast takes no ':" + quoted_text(key).substr(1));
    if (key == "scale") {
      if (!detail::parse_element(value, f.scale))
        detail::format_error(text, "scale " + quoted_text(value) + " is not an element format");
      if (!rule_given) f.rule = Format::default_rule(f.scale);
    } else if (key == "rule") {
      rule_given = true;
      if (value == "floor") f.rule = ScaleRule::floor;
      else if (value == "ceil") f.rule = ScaleRule::ceil;
      else if (value == "rceil") f.rule = ScaleRule::rceil;
      else if (value == "even") f.rule = ScaleRule::even;
      else if (value == "amax") f.rule = ScaleRule::amax;
      else detail::format_error(text, "rule must be floor, ceil, rceil, even or amax");
    } else if (key == "axis") {
      if (!f.has_axis()) detail::format_error(text, "only channel and block formats have an axis");
      const bool negative = !value.empty() && value[0] == '-';
      const long a = detail::parse_count(value.substr(negative ? 1 : 0));
      if (a < 0) detail::format_error(text, "axis must be an integer");
      f.axis = int(negative ? -a : a);
    } else {
      detail::format_error(text, "unknown key " + quoted_text(key) + " (keys: scale, rule, axis)");
    }
  }
}

}  // namespace detail

// Parses a format name; throws FormatError naming the problem and listing the valid names.
// A name is a named format or ELEMENT[@GRANULARITY], either followed by ':key=value' options
// (docs/formats.md): "mxfp4:axis=0" is MXFP4 with its blocks along axis 0.
inline Format parse_format(std::string_view text) {
  for (const auto& n : named_formats())
    if (text == n.name) return n.format;
  std::string_view rest = text;
  const auto colon = rest.find(':');
  std::string_view head = rest.substr(0, colon);
  rest = colon == std::string_view::npos ? std::string_view{} : rest.substr(colon + 1);
  Format f;
  const NamedFormat* named = nullptr;
  for (const auto& n : named_formats())
    if (head == n.name) named = &n;
  if (named) {
    f = named->format;
  } else {
    f = detail::parse_format_head(text, head);
  }
  detail::parse_format_options(text, rest, f);
  const std::string why = f.invalid_reason();
  if (!why.empty()) detail::format_error(text, why);
  return f;
}

}  // namespace qcast
