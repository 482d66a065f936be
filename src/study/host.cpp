#include "study/host.h"

#include <sys/resource.h>

#include <csignal>

namespace lowbit::study {

size_t peak_host_rss_bytes() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return size_t(usage.ru_maxrss) * 1024;  // Linux reports kilobytes
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
