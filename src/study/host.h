// Process facts the study commands record or need: peak host memory, SIGTERM handling.
#pragma once
#include <cstddef>

namespace lowbit::study {

// Peak resident set size of this process (getrusage ru_maxrss), in bytes. Host memory only: on
// the CPU backend it covers weights and activations; on CUDA it excludes device memory.
size_t peak_host_rss_bytes();

// Resets the kernel's peak-RSS mark (VmHWM) to the current RSS (writes 5 to
// /proc/self/clear_refs), so a later peak_rss_since_reset_bytes() measures from now on: with one
// model resident at a time, one format's peak, standing alone. False where the kernel refuses.
bool reset_peak_rss();
// VmHWM from /proc/self/status in bytes: the peak RSS since the last reset_peak_rss() (or since
// the process started); 0 when unreadable.
size_t peak_rss_since_reset_bytes();

// Makes SIGTERM (what Slurm and `kill` send) act like SIGINT, so the one flag that
// cli::interrupted() polls covers both: the handler re-raises SIGINT, which is async-signal-safe
// and needs no second piece of process-wide state.
void treat_sigterm_as_sigint();

}  // namespace lowbit::study
