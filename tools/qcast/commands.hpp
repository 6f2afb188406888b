// Subcommands of the qcast tool. Each returns the process exit code.
#pragma once
#include <string>
#include <vector>

namespace qcast_cli {

struct UsageError {
  std::string message;
};

int formats_command(const std::vector<std::string>& args);
int cast_command(const std::vector<std::string>& args);
int bench_command(const std::vector<std::string>& args);  // needs LibTorch (QCAST_CLI_BENCH)

}  // namespace qcast_cli
