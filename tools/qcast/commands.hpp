// Subcommands of the qcast tool. Each returns the process exit code.
#pragma once
#include <exception>
#include <string>
#include <vector>

namespace qcast_cli {

struct UsageError {
  std::string message;
};

// The value after option args[i] (advancing i), or a UsageError naming the option.
inline const std::string& option_value(const std::vector<std::string>& args, std::size_t& i) {
  if (i + 1 >= args.size()) throw UsageError{args[i] + " needs a value"};
  return args[++i];
}

inline long long parse_integer(const std::string& flag, const std::string& v) {
  try {
    std::size_t used = 0;
    const long long n = std::stoll(v, &used);
    if (used == v.size()) return n;
  } catch (const std::exception&) {
  }
  throw UsageError{flag + " needs an integer, got '" + v + "'"};
}

// A finite number, as std::stof reads it (decimal or hexadecimal floating point).
inline float parse_number(const std::string& flag, const std::string& v) {
  try {
    std::size_t used = 0;
    const float x = std::stof(v, &used);
    if (used == v.size()) return x;
  } catch (const std::exception&) {
  }
  throw UsageError{flag + " needs a number, got '" + v + "'"};
}

int formats_command(const std::vector<std::string>& args);
int cast_command(const std::vector<std::string>& args);
int bench_command(const std::vector<std::string>& args);     // ATen baselines only with QCAST_CLI_TORCH
int quantize_command(const std::vector<std::string>& args);  // needs LibTorch (QCAST_CLI_TORCH)

}  // namespace qcast_cli
