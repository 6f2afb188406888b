// The operator library, libqcast_ops.so (target qcast::ops): `torch.ops.qcast.cast` and
// `torch.ops.qcast.hadamard`, registered with TORCH_LIBRARY when the library is loaded
// (docs/ops.md). A C++ program that runs TorchScript models holding these operators links it and
// calls torch_ops_library() once, so that the linker keeps the library (with --as-needed it would
// drop a library whose symbols nothing references, and its operators with it).
#pragma once

namespace qcast {

// Always true; calling it is what keeps libqcast_ops.so loaded.
bool torch_ops_library();

}  // namespace qcast
