#include "method/gated_edit.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace ngate {

LayerHooks gate_hooks(const std::vector<int64_t>& layers, const torch::Tensor& keep, const torch::Tensor& subject) {
  auto selected = subject.unsqueeze(-1);  // [R, T, 1] bool
  LayerHooks hooks;
  hooks.ffn = [layers, keep, selected](int64_t layer, const torch::Tensor& y) -> torch::Tensor {
    auto it = std::find(layers.begin(), layers.end(), layer);
    if (it == layers.end()) return y;
    auto gate = keep.select(0, it - layers.begin()).to(y.scalar_type()).view({1, 1, -1});  // [1, 1, H]
    auto k = torch::where(selected, gate, torch::ones_like(gate));                        // [R, T, H]
    return k * y + (1 - k) * y.detach();
  };
  return hooks;
}

namespace {

// The error of a step whose loss is not finite (steps counted from 0 over all epochs).
// `step` counts batches over all epochs from 0; `inner` is the Adam step within the batch (DINM takes several).
std::string non_finite_step(int64_t step, int64_t batches, int64_t inner = 0, int64_t per_batch = 1) {
  return "edit step " + std::to_string(step * per_batch + inner + 1) + " (epoch " + std::to_string(step / batches + 1) + ", batch " +
         std::to_string(step % batches + 1) + "): the loss is not finite (NaN or Inf); the weights are left as they were " +
         "before the edit (lower lr)";
}

struct Trainable {
  torch::Tensor weight;  // the model's own tensor
  torch::Tensor master;  // float32 copy Adam updates (the weight itself when the model is float32)
};

std::vector<Trainable> trainables(LlamaModel& model, const EditOptions& o) {
  if (o.layers.empty()) throw std::runtime_error("layers: at least one layer is needed");
  if (o.params.empty()) throw std::runtime_error("params: at least one of gate_proj, up_proj, down_proj is needed");
  if (o.gated) {
    if (!o.keep.defined() || o.keep.dim() != 2 || o.keep.size(0) != static_cast<int64_t>(o.layers.size()) ||
        o.keep.size(1) != model.config().hidden_size) {
      throw std::runtime_error("gate: expected one keep vector of hiddenSize per edited layer");
    }
  }
  std::vector<Trainable> out;
  for (int64_t l : o.layers) {
    for (const auto& p : o.params) {
      Trainable t;
      t.weight = model.ffn_weight(l, p);
      // Adam steps of lr 1e-5 vanish in bfloat16's 8-bit mantissa: keep float32 masters.
      t.master = t.weight.scalar_type() == torch::kFloat32 ? t.weight : t.weight.detach().to(torch::kFloat32).clone();
      out.push_back(t);
    }
  }
  return out;
}

// One batch of pairs [first, first + count), made once for the whole edit,
// with the hidden states that enter the first edited layer when they are reused.
struct EditBatch {
  SequenceBatch batch;
  AttentionInputs attn;
  int64_t first_layer = 0;  // layer the forward pass starts at
  torch::Tensor below;      // [2P, T, H]: input of first_layer (embeddings when 0)
  AnswerIndex answers;      // where the loss is read
  int64_t count = 0;
  // With a KL benign term: the benign rows' answer positions, and the final
  // hidden states there before the edit (the head is never edited, so these
  // give p_before exactly, at a fraction of the logits' memory).
  AnswerIndex benign;
  torch::Tensor base_final;  // [N_benign, H]
};

EditBatch make_edit_batch(const LlamaModel& model, const std::vector<TrainPair>& pairs, size_t first, size_t count,
                          const EditOptions& o, const ImageFeatures* images) {
  EditBatch eb;
  const auto rows = pair_rows(pairs, first, count);
  eb.batch = make_batch(rows, o.pad_id, model.config().vocab_size, model.device(), images ? images->image_token_id : -1);
  attach_images(eb.batch, rows, model, images);
  eb.attn = model.attention_inputs(eb.batch.key_mask, 0, eb.batch.ids.size(1), eb.batch.padded);
  eb.count = static_cast<int64_t>(count);
  eb.answers = make_answer_index(eb.batch.targets);
  eb.first_layer = o.reuse_lower_layers ? *std::min_element(o.layers.begin(), o.layers.end()) : 0;
  torch::NoGradGuard no_grad;
  auto embeds = eb.batch.embeds.defined() ? eb.batch.embeds : model.embed(eb.batch.ids);
  eb.below = model.run_layers(embeds, eb.attn, nullptr, 0, eb.first_layer);
  eb.batch.embeds = torch::Tensor();  // `below` is all the steps read; do not hold both for every batch
  if (o.benign_kl) {
    auto benign_targets = eb.batch.targets.clone();
    benign_targets.narrow(0, 0, eb.count).fill_(-100);
    eb.benign = make_answer_index(benign_targets);
    auto h = model.run_layers(eb.below, eb.attn, nullptr, eb.first_layer, model.config().num_layers);
    eb.base_final = h.reshape({-1, h.size(2)}).index_select(0, eb.benign.flat).clone();
  }
  return eb;
}

// KL(p_before ‖ p_now) of each benign row, averaged over its answer positions
// (EasyEdit's kl_loc_loss on one request); [P].
torch::Tensor kl_rows(const LlamaModel& model, const torch::Tensor& h, const EditBatch& eb) {
  const int64_t H = h.size(2);
  auto now = model.head(h.reshape({-1, H}).index_select(0, eb.benign.flat).unsqueeze(0)).squeeze(0)
                 .to(torch::kFloat32).log_softmax(-1);
  torch::Tensor before;
  {
    torch::NoGradGuard no_grad;
    before = model.head(eb.base_final.unsqueeze(0)).squeeze(0).to(torch::kFloat32).log_softmax(-1);
  }
  auto kl = (before.exp() * (before - now)).sum(-1);  // [N]
  auto sums = torch::zeros({eb.benign.rows}, kl.options()).index_add(0, eb.benign.row, kl);
  return (sums / eb.benign.counts).narrow(0, eb.count, eb.count);
}

// Sum over the batch's pairs of L_sen + α·L_benign (eq. 7's objective), or
// of DINM's sensitive_weight·L_sen + α·KL.
torch::Tensor batch_loss(const LlamaModel& model, const EditBatch& eb, const EditOptions& o, bool use_gate) {
  LayerHooks hooks;
  if (use_gate) hooks = gate_hooks(o.layers, o.keep.to(model.device()), eb.batch.subject);
  auto h = model.run_layers(eb.below, eb.attn, nullptr, eb.first_layer, model.config().num_layers,
                            use_gate ? &hooks : nullptr);
  auto per_row = answer_losses_at(model, h, eb.answers);
  const int64_t P = eb.count;
  torch::Tensor benign = per_row.narrow(0, P, P);
  if (o.benign_kl) {
    benign = kl_rows(model, h, eb);
    if (!o.kl_gradient) benign = benign.detach();
  }
  return (o.sensitive_weight * per_row.narrow(0, 0, P) + o.alpha * benign).sum();
}

// Gradients flow into the model's weights only while an edit runs.
struct RequireGrad {
  std::vector<Trainable>& ts;
  explicit RequireGrad(std::vector<Trainable>& t) : ts(t) {
    for (auto& x : ts) x.weight.set_requires_grad(true);
  }
  ~RequireGrad() {
    for (auto& x : ts) {
      x.weight.set_requires_grad(false);
      x.weight.mutable_grad() = torch::Tensor();
    }
  }
};

}  // namespace

int64_t bits_checksum(const std::vector<torch::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  int64_t total = 0;
  constexpr int64_t chunk = int64_t{1} << 22;  // elements summed at once: no int64 copy of a whole weight
  for (const auto& t : tensors) {
    auto flat = t.detach().contiguous().view(-1);
    const auto as_int = flat.element_size() == 8 ? torch::kInt64 : flat.element_size() == 4 ? torch::kInt32 : torch::kInt16;
    auto bits = flat.view(as_int);
    for (int64_t at = 0; at < bits.numel(); at += chunk) {
      // Wrapping is harmless: the same bits wrap alike on every rank.
      total += bits.narrow(0, at, std::min(chunk, bits.numel() - at)).sum(torch::kInt64).item<int64_t>();
    }
  }
  return total;
}

namespace {

// The data-parallel edit. Each global batch (the one-process run's batch b:
// pairs [b·B, b·B + n)) is split into W contiguous shares, one per rank; a
// rank runs forward and backward on its share alone (the gate acts per
// position, so it is applied exactly as in one process), the gradients of
// every trained weight are summed over the ranks in one flat buffer and
// divided by n, and every rank takes the same Adam step on the same numbers.
// Two more values ride in the buffer: the share's summed loss (for the epoch
// loss) and a stop flag, so that an interrupted rank stops every rank at the
// same step and each puts its weights back.
//
// The sum is issued from here, between backward and the Adam step, on the
// addon's worker thread. That is safe because the worker runs one job at a
// time: nothing else of this process can reach the group while the edit
// runs, so the collectives of an edit form one unbroken sequence that is the
// same on every rank (the same batches, steps and checks, which the first
// collective confirms).
EditResult gated_edit_data_parallel(LlamaModel& model, const std::vector<TrainPair>& pairs, const EditOptions& o,
                                    const std::function<bool()>& cancelled,
                                    const std::function<void(double, double)>& progress, const ImageFeatures* images,
                                    const Collective& group) {
  auto ts = trainables(model, o);
  std::vector<torch::Tensor> weights, masters;
  int64_t numel = 0;
  for (auto& t : ts) {
    weights.push_back(t.weight);
    masters.push_back(t.master);
    numel += t.master.numel();
  }
  const int64_t N = static_cast<int64_t>(pairs.size());
  const int64_t batches = (N + o.batch_size - 1) / o.batch_size;
  require_same_on_all_ranks(group, {N, o.batch_size, o.epochs, numel, o.check_every, bits_checksum(weights)},
                            "the edit (pairs, batchSize, epochs, trained values, checkEvery) or the weights before it");
  const int64_t W = group.size, r = group.rank;
  struct Share {
    std::unique_ptr<EditBatch> batch;  // null when this rank's share of the global batch is empty
    int64_t global_count = 0;
  };
  std::vector<Share> shares;
  for (int64_t b = 0; b < batches; ++b) {
    const int64_t first = b * o.batch_size, n = std::min<int64_t>(o.batch_size, N - first);
    const int64_t lo = first + n * r / W, hi = first + n * (r + 1) / W;
    Share s;
    s.global_count = n;
    if (hi > lo) s.batch = std::make_unique<EditBatch>(make_edit_batch(model, pairs, lo, hi - lo, o, images));
    shares.push_back(std::move(s));
  }
  std::vector<torch::Tensor> backup;
  for (auto& w : weights) backup.push_back(w.detach().clone());
  // [gradients of every trained weight, the share's summed loss, the stop flag]
  auto flat = torch::zeros({numel + 2}, torch::TensorOptions().dtype(torch::kFloat32).device(model.device()));
  EditResult result;
  int64_t step = 0, checked_at = 0;
  auto check = [&](int64_t at) {
    require_same_on_all_ranks(group, {bits_checksum(weights)}, "the edited weights after step " + std::to_string(at));
    checked_at = at;
  };
  try {
    RequireGrad guard(ts);
    torch::optim::Adam adam(masters, torch::optim::AdamOptions(o.lr));
    for (int64_t epoch = 0; epoch < o.epochs; ++epoch) {
      double epoch_loss = 0;
      for (int64_t b = 0; b < batches; ++b) {
        const bool stop = cancelled && cancelled();
        for (auto& t : ts) {
          t.weight.mutable_grad() = torch::Tensor();
          t.master.mutable_grad() = torch::Tensor();
        }
        flat.zero_();
        const auto& share = shares[static_cast<size_t>(b)];
        if (!stop && share.batch) {
          // The sum over the share's pairs; the division by the global count comes after the reduction.
          auto loss = batch_loss(model, *share.batch, o, o.gated);
          loss.backward();
          torch::NoGradGuard no_grad;
          int64_t at = 0;
          for (auto& t : ts) {
            flat.narrow(0, at, t.master.numel()).copy_(t.weight.grad().reshape(-1));
            at += t.master.numel();
          }
          flat.narrow(0, numel, 1).copy_(loss.detach().reshape({1}));
        }
        if (stop) flat.narrow(0, numel + 1, 1).fill_(1);
        group.sum(flat);
        auto tail = flat.narrow(0, numel, 2).to(torch::kCPU, torch::kFloat64);
        if (tail[1].item<double>() > 0) {
          throw std::runtime_error(stop ? "aborted" : "another rank stopped the edit (it was interrupted)");
        }
        {
          torch::NoGradGuard no_grad;
          flat.narrow(0, 0, numel).div_(static_cast<double>(share.global_count));
          int64_t at = 0;
          for (auto& t : ts) {
            t.master.mutable_grad() = flat.narrow(0, at, t.master.numel()).view_as(t.master);
            at += t.master.numel();
          }
        }
        adam.step();
        {
          torch::NoGradGuard no_grad;
          for (auto& t : ts) {
            if (t.master.data_ptr() != t.weight.data_ptr()) t.weight.copy_(t.master);
          }
        }
        // Every rank reads the same reduced sum, so every rank stops here alike.
        if (!std::isfinite(tail[0].item<double>())) throw std::runtime_error(non_finite_step(step, batches));
        epoch_loss += tail[0].item<double>();
        ++step;
        if (progress) progress(static_cast<double>(step), static_cast<double>(o.epochs * batches));
        if (o.check_every > 0 && step % o.check_every == 0) check(step);
      }
      result.epoch_losses.push_back(epoch_loss / static_cast<double>(N));
    }
    if (checked_at != step) check(step);
  } catch (...) {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < ts.size(); ++i) ts[i].weight.copy_(backup[i]);
    throw;
  }
  return result;
}

}  // namespace

EditResult gated_edit(LlamaModel& model, const std::vector<TrainPair>& pairs, const EditOptions& o,
                      const std::function<bool()>& cancelled, const std::function<void(double, double)>& progress,
                      const ImageFeatures* images, const Collective* group) {
  if (o.epochs < 1) throw std::runtime_error("epochs must be at least 1");
  if (o.batch_size < 1) throw std::runtime_error("batchSize must be at least 1");
  if (o.steps_per_batch < 1) throw std::runtime_error("stepsPerBatch must be at least 1");
  if (o.check_every < 0) throw std::runtime_error("checkEvery must be a non-negative integer");
  if (pairs.empty()) throw std::runtime_error("no pairs to edit with");
  if (group) {
    if (o.steps_per_batch != 1 || o.fresh_optimizer_per_batch || o.stop_below > 0 || o.norm_constraint > 0 || o.benign_kl) {
      throw std::runtime_error("DINM's edit settings are not supported across processes; run it in one process");
    }
    return gated_edit_data_parallel(model, pairs, o, cancelled, progress, images, *group);
  }
  auto ts = trainables(model, o);
  // The weights as they were, so that a cancelled edit leaves the model untouched.
  std::vector<torch::Tensor> backup;
  for (auto& t : ts) backup.push_back(t.weight.detach().clone());
  std::vector<torch::Tensor> masters;
  for (auto& t : ts) masters.push_back(t.master);
  EditResult result;
  const int64_t N = static_cast<int64_t>(pairs.size());
  const int64_t batches = (N + o.batch_size - 1) / o.batch_size;
  // Pairs are batched in order, the same batches every epoch. Made before the
  // first step, so a KL term compares with the weights the call began with.
  std::vector<EditBatch> prepared;
  for (int64_t b = 0; b < batches; ++b) {
    const int64_t first = b * o.batch_size;
    prepared.push_back(make_edit_batch(model, pairs, first, std::min<int64_t>(o.batch_size, N - first), o, images));
  }
  const double total_steps = static_cast<double>(o.epochs * batches * o.steps_per_batch);
  try {
    RequireGrad guard(ts);
    auto make_adam = [&] { return std::make_unique<torch::optim::Adam>(masters, torch::optim::AdamOptions(o.lr)); };
    auto adam = make_adam();
    std::vector<torch::Tensor> step_losses;  // on the device; read once at the end
    int64_t done = 0;
    // The first step whose loss is not finite, tracked on the device and read
    // with the epoch loss: the edit stops there and the weights are put back.
    // Coded as (epoch · batches + batch) · stepsPerBatch + step.
    auto first_bad = torch::full({}, -1, torch::TensorOptions().dtype(torch::kInt64).device(model.device()));
    for (int64_t epoch = 0; epoch < o.epochs; ++epoch) {
      // Summed on the device and read once per epoch: no host sync inside the step loop.
      auto epoch_loss = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat64).device(model.device()));
      double epoch_weight = 0;
      for (int64_t b = 0; b < batches; ++b) {
        const int64_t count = prepared[b].count;
        if (o.fresh_optimizer_per_batch && (epoch > 0 || b > 0)) adam = make_adam();
        std::vector<torch::Tensor> start;  // the batch's starting weights, for the norm constraint
        if (o.norm_constraint > 0) {
          torch::NoGradGuard no_grad;
          for (auto& m : masters) start.push_back(m.detach().clone());
        }
        for (int64_t s = 0; s < o.steps_per_batch; ++s) {
          if (cancelled && cancelled()) throw std::runtime_error("aborted");
          for (auto& t : ts) t.weight.mutable_grad() = torch::Tensor();
          // Mean over the pairs of the batch: the usual fine-tuning objective.
          auto loss = batch_loss(model, prepared[b], o, o.gated) / static_cast<double>(count);
          // EasyEdit tests the loss before its backward pass and leaves the request once it is tiny.
          if (o.stop_below > 0 && loss.item<double>() < o.stop_below) {
            done += o.steps_per_batch - s;
            if (progress) progress(static_cast<double>(done), total_steps);
            break;
          }
          loss.backward();
          torch::NoGradGuard no_grad;
          for (auto& t : ts) {
            if (t.master.data_ptr() != t.weight.data_ptr()) t.master.mutable_grad() = t.weight.grad().to(torch::kFloat32);
          }
          adam->step();
          for (size_t i = 0; i < start.size(); ++i) {
            masters[i].copy_(torch::max(torch::min(masters[i], start[i] + o.norm_constraint), start[i] - o.norm_constraint));
          }
          for (auto& t : ts) {
            if (t.master.data_ptr() != t.weight.data_ptr()) t.weight.copy_(t.master);
          }
          auto l = loss.detach().to(torch::kFloat64);
          first_bad = torch::where((first_bad < 0) & l.isfinite().logical_not(),
                                   torch::full_like(first_bad, ((epoch * batches) + b) * o.steps_per_batch + s), first_bad);
          step_losses.push_back(l);
          epoch_loss += l * static_cast<double>(count);
          epoch_weight += static_cast<double>(count);
          if (progress) progress(static_cast<double>(++done), total_steps);
        }
      }
      const double summed = epoch_loss.item<double>();
      if (const int64_t bad = first_bad.item<int64_t>(); bad >= 0) {
        throw std::runtime_error(non_finite_step(bad / o.steps_per_batch, batches, bad % o.steps_per_batch, o.steps_per_batch));
      }
      // A step can also leave the weights non-finite with a finite loss (a huge lr): checked once per epoch.
      for (auto& m : masters) {
        if (!m.isfinite().all().item<bool>()) {
          throw std::runtime_error("epoch " + std::to_string(epoch + 1) + ": the edited weights are no longer finite (NaN or Inf); " +
                                   "the weights are left as they were before the edit (lower lr)");
        }
      }
      result.epoch_losses.push_back(epoch_weight > 0 ? summed / epoch_weight : 0.0);
    }
    if (!step_losses.empty()) {
      auto all = torch::stack(step_losses).to(torch::kCPU).contiguous();
      result.step_losses.assign(all.data_ptr<double>(), all.data_ptr<double>() + all.numel());
    }
  } catch (...) {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < ts.size(); ++i) ts[i].weight.copy_(backup[i]);
    throw;
  }
  return result;
}

std::vector<torch::Tensor> edit_gradients(LlamaModel& model, const std::vector<TrainPair>& pairs,
                                          const EditOptions& o, const ImageFeatures* images) {
  auto ts = trainables(model, o);
  RequireGrad guard(ts);
  for (auto& t : ts) t.weight.mutable_grad() = torch::Tensor();
  auto eb = make_edit_batch(model, pairs, 0, pairs.size(), o, images);
  auto loss = batch_loss(model, eb, o, o.gated) / static_cast<double>(pairs.size());
  loss.backward();
  std::vector<torch::Tensor> grads;
  for (auto& t : ts) grads.push_back(t.weight.grad().to(torch::kFloat32).to(torch::kCPU).clone());
  return grads;
}

FfnProbe probe_ffn(LlamaModel& model, const std::vector<TrainPair>& pairs, int64_t layer, double alpha,
                   int64_t pad_id) {
  const int64_t P = static_cast<int64_t>(pairs.size());
  auto batch = make_batch(pair_rows(pairs, 0, pairs.size()), pad_id, model.config().vocab_size, model.device());
  torch::Tensor x, y;
  LayerHooks hooks;
  // A leaf in place of the FFN output: its gradient is δ = ∂L/∂f_l.
  hooks.ffn = [&](int64_t l, const torch::Tensor& f) -> torch::Tensor {
    if (l != layer) return f;
    y = f.detach().clone().set_requires_grad(true);
    return y;
  };
  auto logits = model.forward(batch.ids, batch.key_mask, batch.padded, nullptr, false, &hooks);
  auto per_row = answer_losses(logits, batch.targets);
  auto loss = (per_row.narrow(0, 0, P) + alpha * per_row.narrow(0, P, P)).sum() / static_cast<double>(P);
  loss.backward();
  FfnProbe probe;
  probe.delta = y.grad().to(torch::kFloat32).to(torch::kCPU);
  probe.subject = batch.subject.to(torch::kCPU);
  // The FFN's own input and projections at that layer, from a hook-free recompute.
  torch::NoGradGuard no_grad;
  probe.x = model.ffn_input(batch.ids, batch.key_mask, batch.padded, layer).to(torch::kFloat32).to(torch::kCPU);
  auto xd = probe.x.to(model.device(), model.dtype());
  probe.g = torch::linear(xd, model.ffn_weight(layer, "gate_proj")).to(torch::kFloat32).to(torch::kCPU);
  probe.u = torch::linear(xd, model.ffn_weight(layer, "up_proj")).to(torch::kFloat32).to(torch::kCPU);
  return probe;
}

}  // namespace ngate
