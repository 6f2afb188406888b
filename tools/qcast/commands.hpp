// Subcommands of the qcast tool. Each returns the process exit code.
#pragma once
#include <cerrno>
#include <cstdint>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include "qcast/format_names.hpp"

namespace qcast_cli {

struct UsageError {
  std::string message;
};

// The exit codes of every command, as each --help states them.
enum ExitCode : int { exit_ok = 0, exit_error = 1, exit_usage = 2, exit_stopped = 130 };
inline constexpr const char* kExitCodes =
    "\nexit status: 0 done, 1 error while running (a file, the data, the model), 2 usage error (an\n"
    "option, a value, a format or method name), 130 stopped by SIGINT/SIGTERM (quantize)\n";

// Text from the command line for a message: quoted, at most 64 characters.
inline std::string shown(const std::string& v) { return qcast::detail::quoted_text(v); }

// An integer in [lo, hi], written as decimal digits with an optional leading '-' and nothing else
// (no spaces, '+', hexadecimal or trailing text); a UsageError quoting the value otherwise.
inline long long parse_integer(const std::string& flag, const std::string& v, long long lo, long long hi) {
  const std::size_t first = !v.empty() && v[0] == '-' ? 1 : 0;
  bool ok = v.size() > first && v.size() <= 20;
  for (std::size_t i = first; ok && i < v.size(); ++i) ok = v[i] >= '0' && v[i] <= '9';
  long long n = 0;
  if (ok) {
    errno = 0;
    n = std::strtoll(v.c_str(), nullptr, 10);
    ok = errno == 0;
  }
  if (!ok || n < lo || n > hi)
    throw UsageError{flag + " needs an integer from " + std::to_string(lo) + " to " + std::to_string(hi) + ", got " +
                     shown(v)};
  return n;
}

// A finite number in decimal or hexadecimal floating-point notation ("0.5", "1e-3", "0x1p-7"), the
// whole value and nothing else; a UsageError quoting the value otherwise.
inline float parse_number(const std::string& flag, const std::string& v) {
  const bool starts_well = !v.empty() && (v[0] == '-' || v[0] == '.' || (v[0] >= '0' && v[0] <= '9'));
  if (starts_well) {
    char* end = nullptr;
    const float x = std::strtof(v.c_str(), &end);  // overflow gives ±Inf (rejected), underflow 0 or a subnormal
    if (*end == '\0' && std::isfinite(x)) return x;
  }
  throw UsageError{flag + " needs a finite number, got " + shown(v)};
}

// A format named on the command line; an unknown or malformed name is a usage error (the message
// lists the valid names).
inline qcast::Format format_option(const std::string& text) {
  try {
    return qcast::parse_format(text);
  } catch (const std::invalid_argument& e) {
    throw UsageError{e.what()};
  }
}

// Mixed precision's budget (quantize --budget, allocate --budget): bits per weight in (0, 64].
inline double budget_bits_option(const std::string& text) {
  const double bits = parse_number("--budget", text);
  if (!(bits > 0 && bits <= 64)) throw UsageError{"--budget is in bits per weight, in (0, 64]; got " + shown(text)};
  return bits;
}

// --budget-mb: MiB, as bytes.
inline std::int64_t budget_mb_option(const std::string& text) {
  const double mb = parse_number("--budget-mb", text);
  if (!(mb > 0 && mb < double(std::int64_t(1) << 40))) throw UsageError{"--budget-mb must be positive, got " + shown(text)};
  return std::int64_t(std::floor(mb * double(1 << 20)));
}

int formats_command(const std::vector<std::string>& args);
int allocate_command(const std::vector<std::string>& args);
int cast_command(const std::vector<std::string>& args);
int bench_command(const std::vector<std::string>& args);     // ATen baselines only with QCAST_CLI_TORCH
int quantize_command(const std::vector<std::string>& args);  // needs LibTorch (QCAST_CLI_TORCH)

}  // namespace qcast_cli
