// The admin state file: "# sprayer admin state" then "ID STATE STAMP" lines.
#include "proxy/control/admin_state.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>

namespace sprayer::proxy {
namespace {

constexpr const char* kHeader =
    "# sprayer admin state: server id, drain|maintenance|ready, and when it changed (Unix ms), one a line";
constexpr size_t kMaxLines = 100000;
constexpr size_t kMaxBytes = 8 << 20;

bool parse_state(const std::string& word, health::AdminState& out) {
  if (word == "drain") out = health::AdminState::drain;
  else if (word == "maintenance") out = health::AdminState::maintenance;
  else if (word == "ready") out = health::AdminState::ready;
  else return false;
  return true;
}

bool parse_stamp(const std::string& word, uint64_t& out) {
  auto [end, ec] = std::from_chars(word.data(), word.data() + word.size(), out);
  return ec == std::errc() && end == word.data() + word.size();
}

}  // namespace

std::string format_admin_states(const AdminStates& states) {
  std::string text = std::string(kHeader) + "\n";
  for (const auto& [id, record] : states) {
    if (record.state == health::AdminState::ready && record.stamp == 0) continue;
    text += id + " " + std::string(health::to_string(record.state)) + " " + std::to_string(record.stamp) + "\n";
  }
  return text;
}

bool parse_admin_states(std::string_view text, const std::string& name, AdminStates& out, std::string& error) {
  out.clear();
  if (text.size() > kMaxBytes) {
    error = name + ": more than " + std::to_string(kMaxBytes) + " bytes, not admin states";
    return false;
  }
  size_t number = 0;
  while (!text.empty()) {
    size_t end = text.find('\n');
    std::string line(text.substr(0, end));
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    if (++number > kMaxLines) {
      error = name + ": more than " + std::to_string(kMaxLines) + " lines, not admin states";
      out.clear();
      return false;
    }
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    std::istringstream words(line);
    std::string id, state, stamp, extra;
    AdminRecord record;
    bool ok = static_cast<bool>(words >> id >> state) && parse_state(state, record.state);
    if (ok && (words >> stamp)) ok = parse_stamp(stamp, record.stamp) && !(words >> extra);
    if (!ok) {
      error = name + ":" + std::to_string(number) + ": expected \"SERVER_ID drain|maintenance|ready [STAMP]\"";
      out.clear();
      return false;
    }
    out[id] = record;
  }
  return true;
}

bool load_admin_states(const std::string& path, AdminStates& out, std::string& error) {
  out.clear();
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) return true;
    error = path + ": cannot open: " + std::strerror(errno);
    return false;
  }
  std::string text;
  char chunk[65536];
  while (in.read(chunk, sizeof chunk) || in.gcount() > 0) {
    text.append(chunk, static_cast<size_t>(in.gcount()));
    if (text.size() > kMaxBytes) break;
  }
  return parse_admin_states(text, path, out, error);
}

bool save_admin_states(const std::string& path, const AdminStates& states, std::string& error) {
  std::string text = format_admin_states(states);
  std::string temporary = path + ".tmp";
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) {
    error = temporary + ": " + std::strerror(errno);
    return false;
  }
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      error = temporary + ": " + std::strerror(errno);
      ::close(fd);
      ::unlink(temporary.c_str());
      return false;
    }
    done += static_cast<size_t>(n);
  }
  // The new contents are on disk before the name points at them: a crash leaves the old file or the new one.
  bool synced = ::fsync(fd) == 0;
  int sync_errno = errno;
  ::close(fd);
  if (!synced || ::rename(temporary.c_str(), path.c_str()) != 0) {
    error = path + ": " + std::strerror(synced ? errno : sync_errno);
    ::unlink(temporary.c_str());
    return false;
  }
  return true;
}

bool merge_admin_record(AdminRecord& local, const AdminRecord& remote) {
  bool newer = remote.stamp > local.stamp ||
               (remote.stamp == local.stamp && static_cast<int>(remote.state) > static_cast<int>(local.state));
  if (!newer) return false;
  local = remote;
  return true;
}

uint64_t next_admin_stamp(uint64_t now_ms, const AdminStates& known) {
  uint64_t newest = 0;
  for (const auto& [id, record] : known) newest = std::max(newest, record.stamp);
  return std::max(now_ms, newest + 1);
}

}  // namespace sprayer::proxy
