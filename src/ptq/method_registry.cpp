// The method registry: every file of src/ptq/methods/ is one plug-in; CMake writes the list of their
// names into qcast_ptq_methods.inc (one QCAST_PTQ_BUILTIN(name) per file), so adding a method touches
// its own file alone.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <stdexcept>

#include "method.hpp"

#define QCAST_PTQ_BUILTIN(NAME) QCAST_PTQ_METHOD(NAME);
#include "qcast_ptq_methods.inc"
#undef QCAST_PTQ_BUILTIN

namespace qcast::ptq {
namespace detail {
namespace {

const std::vector<MethodPlugin>& plugins() {
  static const std::vector<MethodPlugin> all = [] {
    std::vector<MethodPlugin> v = {
#define QCAST_PTQ_BUILTIN(NAME) qcast_ptq_method_##NAME(),
#include "qcast_ptq_methods.inc"
#undef QCAST_PTQ_BUILTIN
    };
    std::sort(v.begin(), v.end(), [](const MethodPlugin& a, const MethodPlugin& b) { return a.info.name < b.info.name; });
    return v;
  }();
  return all;
}

std::string valid_names() {
  std::string r;
  for (const auto& p : plugins()) r += (r.empty() ? "" : ", ") + p.info.name;
  return r;
}

}  // namespace

const MethodPlugin& find_plugin(const std::string& name) {
  for (const auto& p : plugins())
    if (p.info.name == name) return p;
  throw std::invalid_argument("unknown method '" + name.substr(0, 64) + "'; valid methods: " + valid_names());
}

MethodValues::MethodValues(const MethodInfo& info, const std::map<std::string, std::string>& given)
    : method_(info.name) {
  for (const auto& o : info.options) values_[o.name] = o.default_value;
  for (const auto& [name, value] : given) {
    const MethodOption* decl = nullptr;
    for (const auto& o : info.options)
      if (o.name == name) decl = &o;
    if (!decl) {
      std::string valid;
      for (const auto& o : info.options) valid += (valid.empty() ? "" : ", ") + o.name;
      throw std::invalid_argument("method " + info.name + " has no option '" + name.substr(0, 64) + "'" +
                                  (valid.empty() ? " (it takes none)" : "; its options: " + valid));
    }
    const std::string shown = "'" + value.substr(0, 64) + "'";
    errno = 0;
    char* end = nullptr;
    switch (decl->kind) {
      case MethodOption::Kind::flag:
        if (value != "true" && value != "false")
          throw std::invalid_argument("option " + name + " of " + info.name + " takes true or false, not " + shown);
        break;
      case MethodOption::Kind::integer:
      case MethodOption::Kind::count: {
        const long long v = std::strtoll(value.c_str(), &end, 10);
        const long long least = decl->kind == MethodOption::Kind::count ? 0 : 1;
        if (value.empty() || *end || errno || v < least || v > (1LL << 30))
          throw std::invalid_argument("option " + name + " of " + info.name + " takes an integer from " + std::to_string(least) +
                                      " to 2^30, not " + shown);
        break;
      }
      case MethodOption::Kind::choice: {
        if (std::find(decl->choices.begin(), decl->choices.end(), value) == decl->choices.end()) {
          std::string valid;
          for (const auto& c : decl->choices) valid += (valid.empty() ? "" : ", ") + c;
          throw std::invalid_argument("option " + name + " of " + info.name + " takes one of " + valid + ", not " + shown);
        }
        break;
      }
      case MethodOption::Kind::text:
        if (value.empty()) throw std::invalid_argument("option " + name + " of " + info.name + " takes a non-empty value");
        break;
      case MethodOption::Kind::real: {
        const double v = std::strtod(value.c_str(), &end);
        if (value.empty() || *end || errno || !std::isfinite(v) || v < 0)
          throw std::invalid_argument("option " + name + " of " + info.name + " takes a finite number >= 0, not " + shown);
        break;
      }
    }
    values_[name] = value;
  }
}

const std::string& MethodValues::text(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) throw std::logic_error("qcast: method " + method_ + " reads undeclared option " + name);
  return it->second;
}
bool MethodValues::flag(const std::string& name) const { return text(name) == "true"; }
std::int64_t MethodValues::integer(const std::string& name) const { return std::strtoll(text(name).c_str(), nullptr, 10); }
double MethodValues::real(const std::string& name) const { return std::strtod(text(name).c_str(), nullptr); }

}  // namespace detail

const std::vector<MethodInfo>& methods() {
  static const std::vector<MethodInfo> infos = [] {
    std::vector<MethodInfo> v;
    for (const auto& p : detail::plugins()) v.push_back(p.info);
    return v;
  }();
  return infos;
}

const MethodInfo& find_method(const std::string& name) { return detail::find_plugin(name).info; }

}  // namespace qcast::ptq
