// qcast: number-format emulation from the command line.
#include <cstdio>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "commands.hpp"

namespace {

const char* kUsage =
    "usage: qcast <command> [options]\n"
    "\n"
    "commands:\n"
    "  formats   list every named format with its numbers\n"
    "  cast      fake-quantize a .npy file to a format\n"
    "  bench     throughput against memcpy and ATen-op baselines\n"
    "  quantize  post-training quantization of a TorchScript model (RTN, GPTQ, Error Diffusion)\n"
    "\n"
    "Run 'qcast <command> --help' for the options of a command.\n";

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::fputs(kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  try {
    if (command == "formats") return qcast_cli::formats_command(args);
    if (command == "cast") return qcast_cli::cast_command(args);
    if (command == "bench") return qcast_cli::bench_command(args);
#ifdef QCAST_CLI_TORCH
    if (command == "quantize") return qcast_cli::quantize_command(args);
#else
    if (command == "quantize") {
      std::fprintf(stderr, "qcast %s: this qcast was built without LibTorch, which the command needs\n", command.c_str());
      return 2;
    }
#endif
    std::fprintf(stderr, "qcast: unknown command %s (valid: formats, cast, bench, quantize)\n\n%s",
                 qcast_cli::shown(command).c_str(), kUsage);
    return 2;
  } catch (const qcast_cli::UsageError& e) {
    std::fprintf(stderr, "qcast %s: %s\n(see 'qcast %s --help')\n", command.c_str(), e.message.c_str(), command.c_str());
    return 2;
  } catch (const std::bad_alloc&) {  // the readers name their file; this is whatever else ran out
    std::fprintf(stderr, "qcast %s: error: out of memory\n", command.c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qcast %s: error: %s\n", command.c_str(), e.what());
    return 1;
  }
}
