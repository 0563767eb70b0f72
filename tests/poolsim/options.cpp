// Parses poolsim's command line (see options.h). Accepts "--name value" and "--name=value".
#include "tests/poolsim/options.h"

#include <cstdlib>
#include <string_view>

#include "tests/poolsim/ownership_db.h"
#include "tests/poolsim/sql_conn.h"
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
         "               [--tls-cert PEM --tls-key PEM [--tls-client-ca PEM] [--tls-late-tickets]]\n"
         "               [--db sqlite:PATH|postgresql:CONNINFO [--advertise HOST:PORT] [--availability N]\n"
         "                [--heartbeat DURATION] [--stale-after DURATION] [--refresh DURATION] [--no-claim]]\n"
         "               [--traveler [--table-schema default|pool] [--assignment-ttl DURATION]\n"
         "                [--move-threshold N] [--capacity N [--jitter N]] [--hop-latency-ms N]]\n"
         "A stand-in for one HCL Traveler pool server (tests, demo, benchmarks).\n"
         "  --ping-hold DURATION  hold Cmd=Ping this long before answering (default 30s)\n"
         "  --latency-ms N        delay every response by N ms\n"
         "  --error-rate F        answer this fraction (0..1) of ActiveSync requests with 503\n"
         "  --unavailable         getStatus reports 503 until POST /poolsim/available?value=1\n"
         "  --seed N              seed of the error-rate PRNG (default 1)\n"
         "  --verbose             log every request to stderr\n"
         "  --tls-cert/--tls-key  serve HTTPS with this certificate chain and key; responses carry\n"
         "                        X-Tls-Sni, X-Tls-Version, X-Tls-Resumed and X-Tls-Client\n"
         "  --tls-client-ca PEM   require a client certificate issued by this CA\n"
         "  --tls-late-tickets    TLS 1.3: send a new session ticket after every response, when the\n"
         "                        client's connection is idle (a keep-alive pool must read it)\n"
         "Pool duties (with --db only):\n"
         "  --db SPEC             the pool tables: sqlite:PATH or postgresql:CONNINFO (a libpq\n"
         "                        conninfo or postgresql:// URI); registers, heartbeats, claims users\n"
         "  --advertise HOST:PORT pool_server.address (default: the listen address)\n"
         "  --availability N      Traveler availability index -200..100 (default 0); negative\n"
         "                        = take no new users. POST /poolsim/availability?value=N changes it\n"
         "  --heartbeat DURATION  heartbeat period (default 1s)\n"
         "  --stale-after DURATION  an owner whose heartbeat is older is dead (default 3s)\n"
         "  --refresh DURATION    ownership cache refresh period (default 200ms)\n"
         "  --no-claim            never claim or take over users\n"
         "Traveler mode (with --db): the pool decides, as an HCL Traveler HA pool does:\n"
         "  --traveler            a user's first request (wherever it lands) assigns the master monitor\n"
         "                        by availability index, possibly another server; a request reaching a\n"
         "                        server that is not the master monitor is handed over (simulated: the\n"
         "                        receiving server answers for it), counted as a hop in /poolsim/stats\n"
         "                        and stamped X-Hop: 1 with X-Master-Monitor. Users are found as sprayer\n"
         "                        finds them (plain and base64 ActiveSync queries, Basic auth, Traveler\n"
         "                        URLs). --db also takes mariadb:host=H port=P user=U password=W dbname=D\n"
         "  --table-schema S      default (user_owner with epochs, conf/sql/schema-*.sql) or pool\n"
         "                        (tr_user_monitor/tr_pool_server, conf/sql/schema-pool-*.sql)\n"
         "  --assignment-ttl D    an assignment without a connection for this long expires (default 24h)\n"
         "  --move-threshold N    move a user at a connection when another server's index is N points\n"
         "                        higher than its master monitor's (default 50; 0 = never)\n"
         "  --capacity N          load model: index = 100 - 100 * users owned / N (+- --jitter), per\n"
         "                        heartbeat, deterministic under --seed; without it the index is fixed\n"
         "                        (--availability). POST /poolsim/availability?value=N pins it,\n"
         "                        value=model gives it back to the model\n"
         "  --hop-latency-ms N    delay every handed-over request by N ms (the hop's cost)\n";
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
    } else if (name == "--tls-late-tickets") {
      options.tls_late_tickets = true;
    } else if (name == "--traveler") {
      options.traveler = true;
    } else if (name == "--table-schema") {
      if (!value(v)) return ParseOutcome::error;
      if (v != "default" && v != "pool") {
        message = "--table-schema: expected default or pool, got '" + std::string(v) + "'";
        return ParseOutcome::error;
      }
      options.pool_schema = v == "pool";
    } else if (name == "--assignment-ttl") {
      if (!value(v)) return ParseOutcome::error;
      if (!parse_duration_ms(v, options.assignment_ttl_ms) || options.assignment_ttl_ms == 0) {
        message = "--assignment-ttl: not a positive duration (e.g. 24h, 3s): " + std::string(v);
        return ParseOutcome::error;
      }
    } else if (name == "--move-threshold") {
      if (!value(v)) return ParseOutcome::error;
      if (!parse_int(v, options.move_threshold) || options.move_threshold < 0 || options.move_threshold > 300) {
        message = "--move-threshold: not an integer in 0..300: " + std::string(v);
        return ParseOutcome::error;
      }
    } else if (name == "--capacity" || name == "--jitter" || name == "--hop-latency-ms") {
      if (!value(v)) return ParseOutcome::error;
      uint64_t& out = name == "--capacity" ? options.capacity
                      : name == "--jitter" ? options.jitter : options.hop_latency_ms;
      if (!parse_uint(v, out) || (name == "--jitter" && out > 100)) {
        message = std::string(name) + ": not an unsigned integer" + (name == "--jitter" ? " in 0..100" : "") +
                  ": " + std::string(v);
        return ParseOutcome::error;
      }
    } else if (name == "--no-claim") {
      options.claim = false;
    } else if (name == "--db") {
      if (!value(v)) return ParseOutcome::error;
      if (v.starts_with("mariadb:")) {
        if (make_sql_conn(v, "check", message) == nullptr) return ParseOutcome::error;  // does not connect
      } else if (!valid_db_spec(v)) {
        message = "--db: expected sqlite:PATH or postgresql:CONNINFO, got '" + std::string(v) + "'";
        return ParseOutcome::error;
      }
      options.db = v;
    } else if (name == "--advertise") {
      if (!value(v)) return ParseOutcome::error;
      uint64_t port = 0;
      size_t colon = v.rfind(':');
      if (colon == std::string_view::npos || colon == 0 || !parse_uint(v.substr(colon + 1), port) ||
          port == 0 || port > 65535) {
        message = "--advertise: expected HOST:PORT, got '" + std::string(v) + "'";
        return ParseOutcome::error;
      }
      options.advertise = v;
    } else if (name == "--availability") {
      if (!value(v)) return ParseOutcome::error;
      if (!parse_int(v, options.availability) || options.availability < -200 || options.availability > 100) {
        message = "--availability: not an integer in -200..100: " + std::string(v);
        return ParseOutcome::error;
      }
    } else if (name == "--heartbeat" || name == "--stale-after" || name == "--refresh") {
      if (!value(v)) return ParseOutcome::error;
      uint64_t& out = name == "--heartbeat" ? options.heartbeat_ms
                      : name == "--stale-after" ? options.stale_after_ms : options.refresh_ms;
      if (!parse_duration_ms(v, out) || out == 0) {
        message = std::string(name) + ": not a positive duration (e.g. 1s, 200ms): " + std::string(v);
        return ParseOutcome::error;
      }
    } else if (name == "--tls-cert" || name == "--tls-key" || name == "--tls-client-ca") {
      if (!value(v)) return ParseOutcome::error;
      std::string& out = name == "--tls-cert" ? options.tls_cert
                         : name == "--tls-key" ? options.tls_key : options.tls_client_ca;
      out = v;
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
  if (options.tls_cert.empty() != options.tls_key.empty() ||
      (!options.tls_client_ca.empty() && options.tls_cert.empty())) {
    message = "--tls-cert and --tls-key go together (and --tls-client-ca needs them)";
    return ParseOutcome::error;
  }
  if (options.db.starts_with("mariadb:") && !options.traveler) {
    message = "--db mariadb: needs --traveler";
    return ParseOutcome::error;
  }
  if ((options.pool_schema || options.capacity > 0) && !options.traveler) {
    message = "--table-schema pool and --capacity need --traveler";
    return ParseOutcome::error;
  }
  if (!have_id || !have_listen) {
    message = "--id and --listen are required";
    return ParseOutcome::error;
  }
  return ParseOutcome::run;
}

}  // namespace poolsim
