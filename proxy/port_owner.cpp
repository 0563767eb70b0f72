// /proc walk for describe_port_owner: bounded (a fixed number of processes and descriptors
// looked at), read-only, and only on a start or reload that already failed to bind.
#include "proxy/port_owner.h"

#include <dirent.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

namespace sprayer::proxy {
namespace {

constexpr int kMaxProcesses = 20000;
constexpr int kMaxDescriptorsPerProcess = 200000;
constexpr char kListenState[] = "0A";

// Inodes of the sockets in LISTEN on `port` in one /proc/net/tcp* table.
void listening_inodes(const char* table, uint16_t port, std::set<unsigned long>& out) {
  std::ifstream in(table);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout;
    unsigned long inode = 0;
    if (!(fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >> timeout >> inode))
      continue;
    size_t colon = local.rfind(':');
    if (colon == std::string::npos || state != kListenState) continue;
    if (std::strtoul(local.c_str() + colon + 1, nullptr, 16) == port && inode != 0) out.insert(inode);
  }
}

std::string command_of(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/comm");
  std::string comm;
  std::getline(in, comm);
  return comm;
}

}  // namespace

std::string describe_port_owner(uint16_t port) {
  std::set<unsigned long> inodes;
  listening_inodes("/proc/net/tcp", port, inodes);
  listening_inodes("/proc/net/tcp6", port, inodes);
  if (inodes.empty()) return "";
  DIR* proc = opendir("/proc");
  if (!proc) return "another process";
  std::string found;
  int processes = 0;
  while (dirent* entry = readdir(proc)) {
    if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
    if (++processes > kMaxProcesses) break;
    std::string pid = entry->d_name;
    std::string fd_dir = "/proc/" + pid + "/fd";
    DIR* fds = opendir(fd_dir.c_str());
    if (!fds) continue;  // another user's process: not ours to see
    int seen = 0;
    while (dirent* fd = readdir(fds)) {
      if (fd->d_name[0] == '.' || ++seen > kMaxDescriptorsPerProcess) continue;
      char target[64];
      ssize_t n = readlink((fd_dir + "/" + fd->d_name).c_str(), target, sizeof target - 1);
      if (n <= 0) continue;
      target[n] = '\0';
      unsigned long inode = 0;
      if (std::sscanf(target, "socket:[%lu]", &inode) == 1 && inodes.count(inode)) {
        found = "pid " + pid + " (" + command_of(pid) + ")";
        break;
      }
    }
    closedir(fds);
    if (!found.empty()) break;
  }
  closedir(proc);
  return found.empty() ? "another process" : found;
}

}  // namespace sprayer::proxy
