// The admin state file: "# sprayer admin state" then "ID STATE" lines.
#include "proxy/control/admin_state.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace sprayer::proxy {
namespace {

constexpr const char* kHeader = "# sprayer admin state: server id and drain|maintenance, one a line";
constexpr size_t kMaxLines = 100000;

bool parse_state(const std::string& word, health::AdminState& out) {
  if (word == "drain") out = health::AdminState::drain;
  else if (word == "maintenance") out = health::AdminState::maintenance;
  else if (word == "ready") out = health::AdminState::ready;
  else return false;
  return true;
}

}  // namespace

bool load_admin_states(const std::string& path, AdminStates& out, std::string& error) {
  out.clear();
  std::ifstream in(path);
  if (!in) {
    if (errno == ENOENT) return true;
    error = path + ": cannot open: " + std::strerror(errno);
    return false;
  }
  std::string line;
  size_t number = 0;
  while (std::getline(in, line)) {
    if (++number > kMaxLines) {
      error = path + ": more than " + std::to_string(kMaxLines) + " lines, not an admin state file";
      return false;
    }
    if (line.empty() || line[0] == '#') continue;
    std::istringstream words(line);
    std::string id, state, extra;
    health::AdminState parsed{};
    if (!(words >> id >> state) || (words >> extra) || !parse_state(state, parsed)) {
      error = path + ":" + std::to_string(number) + ": expected \"SERVER_ID drain|maintenance\"";
      out.clear();
      return false;
    }
    if (parsed != health::AdminState::ready) out[id] = parsed;
  }
  return true;
}

bool save_admin_states(const std::string& path, const AdminStates& states, std::string& error) {
  std::string text = std::string(kHeader) + "\n";
  for (const auto& [id, state] : states)
    if (state != health::AdminState::ready) text += id + " " + std::string(health::to_string(state)) + "\n";
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

}  // namespace sprayer::proxy
