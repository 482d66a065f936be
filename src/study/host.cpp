#include "study/host.h"

#include <sys/resource.h>

#include <csignal>
#include <fstream>
#include <string>

namespace lowbit::study {

size_t peak_host_rss_bytes() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return size_t(usage.ru_maxrss) * 1024;  // Linux reports kilobytes
}

bool reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  if (!out) return false;
  out << "5";
  out.flush();
  return bool(out);
}

size_t peak_rss_since_reset_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return size_t(std::stoull(line.substr(6))) * 1024;  // "VmHWM:  1234 kB"
  return 0;
}

namespace {
void raise_sigint(int) { std::raise(SIGINT); }
}  // namespace

void treat_sigterm_as_sigint() {
  struct sigaction sa {};
  sa.sa_handler = raise_sigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
}

}  // namespace lowbit::study
