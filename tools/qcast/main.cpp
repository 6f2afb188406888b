// qcast: number-format emulation from the command line. The first word names the command; each
// command parses the rest of its line itself (command_line.hpp: CLI11).
#include <cstdio>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "commands.hpp"
#include "qcast/kernels.hpp"
#include "qcast/version.hpp"
#ifdef QCAST_CLI_TORCH
#include <torch/version.h>
#endif

namespace {

const char* kUsage =
    "usage: qcast <command> [options]\n"
    "       qcast --version\n"
    "\n"
    "commands:\n"
    "  formats   list every named format with its numbers (--json for a machine-readable list)\n"
    "  cast      fake-quantize a .npy file to a format\n"
    "  bench     throughput against memcpy and ATen-op baselines\n"
    "  quantize  post-training quantization of a TorchScript model (RTN, GPTQ, GPFQ, Error Diffusion)\n"
    "  allocate  mixed precision at another budget, from the sensitivities of a quantize report\n"
    "\n"
    "Run 'qcast <command> --help' for the options of a command. Options take their value as\n"
    "'--opt value' or '--opt=value'.\n";

// What this build is: its version, and the optional parts it was built with.
void print_version() {
  fmt::print("qcast {}\n", qcast::version_string);
#ifdef QCAST_CLI_TORCH
  fmt::print("LibTorch {} (quantize, ATen baselines)\n", TORCH_VERSION);
#else
  fmt::print("LibTorch: not built with it (no quantize command, no ATen baselines)\n");
#endif
#ifdef QCAST_CLI_CUDA
  fmt::print("CUDA kernels: built (bench --device cuda)\n");
#else
  fmt::print("CUDA kernels: not built\n");
#endif
  fmt::print("CPU kernels: {} on this machine\n", qcast::kernels::current_target());
}

}  // namespace

int main(int argc, char** argv) {
  using namespace qcast_cli;
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::fputs(kUsage, args.empty() ? stderr : stdout);
    std::fputs(kExitCodes, args.empty() ? stderr : stdout);
    return args.empty() ? exit_usage : exit_ok;
  }
  if (args[0] == "--version" || args[0] == "-V" || args[0] == "version") {
    if (args.size() > 1) {
      fmt::print(stderr, "qcast --version: unexpected argument {}\n", shown(args[1]));
      return exit_usage;
    }
    print_version();
    return exit_ok;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  try {
    if (command == "formats") return formats_command(args);
    if (command == "cast") return cast_command(args);
    if (command == "bench") return bench_command(args);
    if (command == "allocate") return allocate_command(args);
#ifdef QCAST_CLI_TORCH
    if (command == "quantize") return quantize_command(args);
#else
    if (command == "quantize") {
      fmt::print(stderr, "qcast {}: this qcast was built without LibTorch, which the command needs\n", command);
      return exit_usage;
    }
#endif
    fmt::print(stderr, "qcast: unknown command {} (valid: formats, cast, bench, quantize, allocate)\n\n{}", shown(command),
               kUsage);
    return exit_usage;
  } catch (const UsageError& e) {
    fmt::print(stderr, "qcast {}: {}\n(see 'qcast {} --help')\n", command, e.message, command);
    return exit_usage;
  } catch (const std::bad_alloc&) {  // the readers name their file; this is whatever else ran out
    fmt::print(stderr, "qcast {}: error: out of memory\n", command);
    return exit_error;
  } catch (const std::exception& e) {
    fmt::print(stderr, "qcast {}: error: {}\n", command, e.what());
    return exit_error;
  }
}
