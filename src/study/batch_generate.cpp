#include "study/batch_generate.h"

#include <algorithm>

#include <fmt/format.h>

#include "core/error.h"

namespace lowbit::study {

bool generate_batched(Model& model, std::span<const GenerationRequest> requests, const FinishedCallback& on_finished,
                      const std::function<bool()>& keep_going) {
  const int n_slots = model.options().n_slots;
  for (size_t i = 0; i < requests.size(); ++i) {
    const std::string problem = prompt_problem(requests[i].prompt.size(), model.max_context());
    if (!problem.empty()) throw InputError(fmt::format("request {}: {}", i, problem));
  }
  // slots[k]: the sequence on KV slot k and its request's index, when one is there.
  struct Occupant {
    Sequence seq;
    size_t index;
  };
  std::vector<std::optional<Occupant>> slots(static_cast<size_t>(n_slots));
  size_t next = 0;

  auto finish = [&](std::optional<Occupant>& slot) {
    on_finished(slot->index, slot->seq.result);
    slot.reset();
  };

  // Fills empty slots: prefill each new prompt alone (its own forward pass) and take its first
  // token. A request that finishes at once (max_new_tokens 0 or 1, EOS first) frees the slot again.
  auto refill = [&]() {
    for (int slot = 0; slot < n_slots; ++slot) {
      auto& cur = slots[size_t(slot)];
      while (!cur && next < requests.size()) {
        const size_t index = next++;
        cur.emplace(Occupant{Sequence(requests[index], slot), index});
        if (requests[index].max_new_tokens <= 0 || take_token(model, cur->seq, prefill(model, cur->seq))) finish(cur);
      }
    }
  };

  refill();
  while (std::any_of(slots.begin(), slots.end(), [](const auto& s) { return s.has_value(); })) {
    if (!keep_going()) return false;
    // One decode step for every active slot, in slot order.
    std::vector<Sequence*> active;
    for (auto& cur : slots)
      if (cur) active.push_back(&cur->seq);
    const std::vector<int32_t> ids = decode_step(model, active);
    for (size_t r = 0, k = 0; k < slots.size(); ++k) {
      auto& cur = slots[k];
      if (!cur) continue;
      if (take_token(model, cur->seq, ids[r++])) finish(cur);
    }
    refill();
  }
  return true;
}

}  // namespace lowbit::study
