// Parses poolsim's command line (see options.h). Accepts "--name value" and "--name=value".
#include "tests/poolsim/options.h"

#include <cstdlib>
#include <string_view>

#include "tests/poolsim/text.h"

namespace poolsim {

namespace {

bool parse_rate(std::string_view text, double& out) {
  std::string copy(text);
  char* end = nullptr;
  double value = std::strtod(copy.c_str(), &end);
  if (copy.empty() || end != copy.c_str() + copy.size() || !(value >= 0.0 && value <= 1.0)) {
    return false;
  }
  out = value;
  return true;
}

}  // namespace

std::string usage() {
  return "usage: poolsim --id ID --listen HOST:PORT [--ping-hold DURATION] [--latency-ms N]\n"
         "               [--error-rate F] [--unavailable] [--seed N] [--verbose]\n"
         "A stand-in for one HCL Traveler pool server (tests, demo, benchmarks).\n"
         "  --ping-hold DURATION  hold Cmd=Ping this long before answering (default 30s)\n"
         "  --latency-ms N        delay every response by N ms\n"
         "  --error-rate F        answer this fraction (0..1) of ActiveSync requests with 503\n"
         "  --unavailable         getStatus reports 503 until POST /poolsim/available?value=1\n"
         "  --seed N              seed of the error-rate PRNG (default 1)\n"
         "  --verbose             log every request to stderr\n";
}

ParseOutcome parse_options(int argc, char** argv, Options& options, std::string& message) {
  bool have_id = false;
  bool have_listen = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::string_view name = arg;
    std::string_view inline_value;
    bool has_inline = false;
    if (size_t eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      inline_value = arg.substr(eq + 1);
      has_inline = true;
    }
    auto value = [&](std::string_view& out) {
      if (has_inline) {
        out = inline_value;
        return true;
      }
      if (i + 1 >= argc) {
        message = std::string(name) + " needs a value";
        return false;
      }
      out = argv[++i];
      return true;
    };
    std::string_view v;
    if (name == "--help" || name == "-h") {
      return ParseOutcome::help;
    } else if (name == "--unavailable") {
      options.unavailable = true;
    } else if (name == "--verbose" || name == "-v") {
      options.verbose = true;
    } else if (name == "--id") {
      if (!value(v)) return ParseOutcome::error;
      options.id = v;
      have_id = !v.empty();
    } else if (name == "--listen") {
      if (!value(v)) return ParseOutcome::error;
      options.listen = v;
      have_listen = true;
    } else if (name == "--ping-hold") {
      if (!value(v)) return ParseOutcome::error;
      if (!parse_duration_ms(v, options.ping_hold_ms)) {
        message = "--ping-hold: not a duration (e.g. 30s, 500ms): " + std::string(v);
        return ParseOutcome::error;
      }
    } else if (name == "--latency-ms") {
      if (!value(v)) return ParseOutcome::error;
      if (!parse_uint(v, options.latency_ms)) {
        message = "--latency-ms: not a number of milliseconds: " + std::string(v);
        return ParseOutcome::error;
      }
    } else if (name == "--error-rate") {
      if (!value(v)) return ParseOutcome::error;
      if (!parse_rate(v, options.error_rate)) {
        message = "--error-rate: not a number in 0..1: " + std::string(v);
        return ParseOutcome::error;
      }
    } else if (name == "--seed") {
      if (!value(v)) return ParseOutcome::error;
      if (!parse_uint(v, options.seed)) {
        message = "--seed: not an unsigned integer: " + std::string(v);
        return ParseOutcome::error;
      }
    } else {
      message = "unknown argument: " + std::string(arg);
      return ParseOutcome::error;
    }
  }
  if (!have_id || !have_listen) {
    message = "--id and --listen are required";
    return ParseOutcome::error;
  }
  return ParseOutcome::run;
}

}  // namespace poolsim
