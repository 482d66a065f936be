// Process facts the study commands record or need: peak host memory, SIGTERM handling.
#pragma once
#include <cstddef>

namespace lowbit::study {

// Peak resident set size of this process (getrusage ru_maxrss), in bytes. Host memory only: on
// the CPU backend it covers weights and activations; on CUDA it excludes device memory.
size_t peak_host_rss_bytes();

// Makes SIGTERM (what Slurm and `kill` send) act like SIGINT, so the one flag that
// cli::interrupted() polls covers both: the handler re-raises SIGINT, which is async-signal-safe
// and needs no second piece of process-wide state.
void treat_sigterm_as_sigint();

}  // namespace lowbit::study
