// Runs a fuzz target's LLVMFuzzerTestOneInput over every file of the folders (or files) given, as
// the test command does with the seed corpora and every input that ever crashed: a crash or a
// failed property aborts the run and fails the test. Built without libFuzzer, by any compiler.
#include <sys/resource.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

int main(int argc, char** argv) {
  namespace fs = std::filesystem;

  std::vector<fs::path> inputs;
  for (int i = 1; i < argc; ++i) {
    std::error_code ec;
    if (fs::is_directory(argv[i], ec)) {
      for (const auto& e : fs::directory_iterator(argv[i]))
        if (e.is_regular_file()) inputs.push_back(e.path());
    } else if (fs::is_regular_file(argv[i], ec)) {
      inputs.push_back(argv[i]);
    } else {
      std::fprintf(stderr, "replay: %s: no such file or folder\n", argv[i]);
      return 2;
    }
  }
  std::sort(inputs.begin(), inputs.end());
  for (const fs::path& p : inputs) {
    std::ifstream f(p, std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    std::fprintf(stderr, "replay: %s\n", p.string().c_str());  // the last one printed is the culprit of a crash
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    // Inputs are small: a target that touched gigabytes for one of them is failing, as libFuzzer's
    // -rss_limit_mb says when fuzzing (an allocation that fails instead may be caught and turned
    // into an error message by the library, which the harness cannot tell from a real one).
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    if (usage.ru_maxrss > 2L * 1024 * 1024) {
      std::fprintf(stderr, "replay: %s: peak memory %ld KiB (more than 2 GiB for a small input)\n", p.string().c_str(),
                   usage.ru_maxrss);
      return 1;
    }
  }
  std::printf("replayed %zu inputs\n", inputs.size());
  return inputs.empty() ? 1 : 0;
}
