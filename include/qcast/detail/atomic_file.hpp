// Writing files so that readers never see half of one and a failure loses nothing: the bytes go to
// a temporary file beside each target, and the temporary files are renamed over the targets only
// once every one of them is complete. An error, an exception or an early return removes them all.
#pragma once
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace qcast::detail {

// The outputs of one command, all or nothing.
// - The constructor checks them before any work: no two are the same file, none is an input, none
//   is a folder or another non-regular file, and each one's folder exists; it then creates an
//   empty temporary file beside each ("<name>.tmp<random>"), so that a folder that cannot be
//   written fails now, not after an hour.
// - write(k, fn) fills output k's temporary file; commit() renames all of them into place.
// - The destructor removes every temporary file that was not renamed.
// Errors are std::runtime_error (a collision: std::invalid_argument) naming the path and its role.
// The renames of commit() are each atomic; if one of them fails (the folder vanished), the outputs
// renamed before it stay and the rest are removed.
class OutputSet {
 public:
  struct Output {
    std::string role;  // how the user named it ("-o", "--export"; empty: by its path alone)
    std::string path;
  };

  OutputSet(std::vector<Output> outputs, const std::vector<std::string>& inputs) : outputs_(std::move(outputs)) {
    namespace fs = std::filesystem;
    std::vector<fs::path> canonical;
    for (const Output& o : outputs_) {
      std::error_code ec;
      if (o.path.empty()) throw std::invalid_argument(label(o) + ": the path is empty");
      if (fs::is_directory(o.path, ec)) throw std::invalid_argument(label(o) + ": is a folder, not a file");
      // A device, pipe or socket would be replaced by the rename (as root, /dev/null itself).
      if (fs::exists(o.path, ec) && !fs::is_regular_file(o.path, ec))
        throw std::invalid_argument(label(o) + ": is not a regular file (a device, pipe or socket)");
      const fs::path parent = fs::path(o.path).parent_path();
      if (!parent.empty() && !fs::is_directory(parent, ec))
        throw std::invalid_argument(label(o) + ": the folder " + parent.string() + " does not exist");
      canonical.push_back(fs::weakly_canonical(fs::absolute(o.path), ec));
      for (std::size_t j = 0; j + 1 < canonical.size(); ++j)
        if (same_file(canonical[j], canonical.back(), outputs_[j].path, o.path))
          throw std::invalid_argument(label(o) + " is also " + label(outputs_[j]) + "; give each output its own path");
      for (const std::string& in : inputs)
        if (!in.empty() && same_file(fs::weakly_canonical(fs::absolute(in), ec), canonical.back(), in, o.path))
          throw std::invalid_argument(label(o) + " is an input; choose another path");
    }
    std::random_device rd;
    for (const Output& o : outputs_) {
      temporaries_.push_back(o.path + ".tmp" + std::to_string(rd()));
      std::ofstream f(temporaries_.back(), std::ios::binary | std::ios::trunc);
      if (!f) {
        temporaries_.pop_back();
        remove_temporaries();  // a constructor that throws runs no destructor
        throw std::runtime_error(label(o) + ": cannot create a file in its folder");
      }
    }
  }
  OutputSet(const OutputSet&) = delete;
  OutputSet& operator=(const OutputSet&) = delete;
  ~OutputSet() { remove_temporaries(); }

  // Calls fn(stream) on output k's temporary file; throws (and keeps nothing) when it cannot be
  // written completely, e.g. on a full disk.
  template <class Write>
  void write(std::size_t k, Write&& fn) {
    const Output& o = outputs_.at(k);
    std::ofstream f(temporaries_.at(k), std::ios::binary | std::ios::trunc);
    if (!f) throw std::runtime_error(o.path + ": cannot open " + temporaries_[k] + " for writing");
    fn(f);
    f.flush();
    if (!f) throw std::runtime_error(o.path + ": write failed (disk full?)");
    f.close();
    if (f.fail()) throw std::runtime_error(o.path + ": write failed (disk full?)");
  }

  // Renames every temporary file over its target, in order.
  void commit() {
    for (std::size_t k = 0; k < outputs_.size(); ++k) {
      std::error_code ec;
      std::filesystem::rename(temporaries_[k], outputs_[k].path, ec);
      if (ec)
        throw std::runtime_error(outputs_[k].path + ": cannot move the finished file into place: " + ec.message());
      temporaries_[k].clear();
    }
  }

  const std::vector<std::string>& temporaries() const { return temporaries_; }

 private:
  static std::string label(const Output& o) { return o.role.empty() ? o.path : o.role + " " + o.path; }
  static bool same_file(const std::filesystem::path& a, const std::filesystem::path& b, const std::string& pa,
                        const std::string& pb) {
    if (!a.empty() && a == b) return true;
    std::error_code ec;  // hard links and other names of one existing file
    return std::filesystem::exists(pa, ec) && std::filesystem::exists(pb, ec) && std::filesystem::equivalent(pa, pb, ec);
  }
  void remove_temporaries() noexcept {
    for (const std::string& t : temporaries_)
      if (!t.empty()) std::remove(t.c_str());
  }

  std::vector<Output> outputs_;
  std::vector<std::string> temporaries_;
};

// One output: write(stream) fills a temporary file beside `path`, which is then renamed to `path`.
// Throws std::runtime_error (message prefixed by `what`) when the file cannot be written or moved.
template <class Write>
void write_file_atomically(const std::string& path, const std::string& what, Write&& write) {
  try {
    OutputSet out({{what == path ? std::string() : what, path}}, {});
    out.write(0, write);
    out.commit();
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(e.what());
  }
}

}  // namespace qcast::detail
