// 05: a TorchScript model that calls qcast's operators (torch.ops.qcast.cast / hadamard, saved from
// Python), run from C++. Linking libqcast_ops.so registers the operators with the TorchScript
// runtime, as torch.ops.load_library does in Python; nothing else is needed to load the model.
//   05_torchscript_ops MODEL.pt IN.pt OUT.pt     (IN/OUT: one tensor each, as torch.save writes it)
#include <torch/script.h>
#include <torch/serialize.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s MODEL.pt IN.pt OUT.pt\n", argv[0]);
    return 2;
  }
  try {
    torch::jit::Module model = torch::jit::load(argv[1]);
    std::ifstream in(argv[2], std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const at::Tensor x = torch::pickle_load(bytes).toTensor();
    const at::Tensor y = model.forward({x}).toTensor();
    const std::vector<char> out = torch::pickle_save(y);
    std::ofstream(argv[3], std::ios::binary).write(out.data(), std::streamsize(out.size()));
    std::printf("%s: ran on %lld values\n", argv[1], static_cast<long long>(x.numel()));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
