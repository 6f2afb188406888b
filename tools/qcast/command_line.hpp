// The command line of one qcast command, parsed by CLI11: "--opt value" and "--opt=value",
// repeatable options kept in order, positional arguments, unknown options refused. Values stay text
// here and are checked by the strict parsers of commands.hpp, whose messages quote them.
#pragma once
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "commands.hpp"

namespace qcast_cli {

// A command's App: CLI11's own help flag is removed, since each command prints a hand-written
// help (it explains more than a list of flags can) from parse_command_line.
inline void prepare_command_app(CLI::App& app) {
  app.set_help_flag();
  app.allow_extras(false);
}

// Parses `args` (the words after the command's name). Returns false after printing `help` (with
// the exit codes) when -h or --help is among them; a ParseError becomes a UsageError.
inline bool parse_command_line(CLI::App& app, const std::vector<std::string>& args, const std::string& help) {
  const auto end_of_options = std::find(args.begin(), args.end(), std::string("--"));
  if (std::find(args.begin(), end_of_options, std::string("--help")) != end_of_options ||
      std::find(args.begin(), end_of_options, std::string("-h")) != end_of_options) {
    std::fputs(help.c_str(), stdout);
    std::fputs(kExitCodes, stdout);
    return false;
  }
  std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes them last first
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    throw UsageError{e.what()};
  }
  return true;
}

}  // namespace qcast_cli
