// The one line of a LibTorch error that says what went wrong, for messages that name their own
// context (the layer, the file): never a backtrace.
#pragma once
#include <c10/util/Exception.h>

#include <exception>
#include <string>

namespace qcast::ptq::detail {

// c10::Error: its message without the backtrace. A TorchScript interpreter error starts with "The
// following operation failed in the TorchScript interpreter." and a TorchScript traceback, and
// ends with the error itself ("RuntimeError: mat1 and mat2 shapes cannot be multiplied ..."): that
// last line is the one kept. Anything else: its first line that is not empty. At most 1000
// characters.
inline std::string error_summary(const std::exception& e) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  const std::string whole = c10_error ? c10_error->what_without_backtrace() : e.what();
  const auto first = whole.find_first_not_of("\n ");
  const std::string m = first == std::string::npos ? std::string() : whole.substr(first);
  std::string line = m.substr(0, m.find('\n'));
  if (line.empty()) return "LibTorch gives no reason";
  if (line.find("failed in the TorchScript interpreter") != std::string::npos) {
    const auto end = m.find_last_not_of("\n ");
    if (end != std::string::npos) {
      const auto start = m.rfind('\n', end);
      line = m.substr(start == std::string::npos ? 0 : start + 1, end - (start == std::string::npos ? 0 : start + 1) + 1);
    }
  }
  return line.size() > 1000 ? line.substr(0, 1000) + "..." : line;
}

}  // namespace qcast::ptq::detail
