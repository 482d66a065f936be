// What every model-running command needs: a backend, the model on it, its tokenizer and its
// generation defaults, loaded from one set of flags.
#pragma once
#include <memory>
#include <optional>

#include "backend/backend.h"
#include "cli/options.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace lowbit::cli {

struct Session {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Model> model;
  std::optional<Tokenizer> tokenizer;
  GenerationDefaults generation;
  double load_seconds = 0;

  std::vector<int32_t> stop_ids() const;  // generation_config eos, else config eos, else tokenizer eos
};

// Loads the backend, tokenizer and model of flags that validate_model_flags accepted, with the
// generation defaults the command read (load_generation_defaults) before loading anything.
Session open_session(const ModelFlags& flags, GenerationDefaults generation, int n_slots = 1);

// SIGINT sets a flag that generation loops poll; the handler is the one piece of process-wide
// state, as a signal handler can reach nothing else.
void install_sigint_handler();
bool interrupted();
// Forgets a SIGINT already handled (interactive chat: Ctrl-C stops one answer, not the session).
void clear_interrupted();

}  // namespace lowbit::cli
