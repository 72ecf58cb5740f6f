// Teacher-forced sequences as token ids (a prompt, then the answer the model is
// trained or scored towards), their padded batches, and the answer-token loss:
// what every loss of the method and the LM trainer is computed on. Marked
// positions (subject_positions) are carried for the caller; the model does not
// know what they mean.
#pragma once
#include <torch/torch.h>

#include <vector>

#include "model/llama.h"
#include "model/vision.h"

namespace ngate {

struct TrainSequence {
  std::vector<int64_t> ids;                // prompt (chat template applied) then answer tokens
  std::vector<int64_t> subject_positions;  // marked token positions of the query (the method's subject tokens)
  int64_t answer_start = 0;                // index of the first answer token in ids
  int64_t image = -1;                      // which of the call's images the query shows (-1: none)
};

// Right-padded tensors of a set of sequences, on the model's device.
struct SequenceBatch {
  torch::Tensor ids;       // [B, T] int64
  torch::Tensor key_mask;  // [B, T] bool, true at real tokens
  torch::Tensor subject;   // [B, T] bool, true at subject positions
  torch::Tensor targets;   // [B, T] int64: the token position t must predict, or -100 (no loss)
  torch::Tensor embeds;    // [B, T, H] input embeddings when a row shows an image (undefined otherwise)
  bool padded = false;
};

// `image_id` is allowed in prompts besides the vocabulary (the image id of a
// model whose vocabulary has no image token); answers must lie in the vocabulary.
SequenceBatch make_batch(const std::vector<const TrainSequence*>& seqs, int64_t pad_id, int64_t vocab_size,
                         torch::Device device, int64_t image_id = -1);

// With images: merges each row's image features into its input embeddings
// (batch.embeds) and checks that no subject position is an image position.
void attach_images(SequenceBatch& batch, const std::vector<const TrainSequence*>& seqs, const LlamaModel& model,
                   const ImageFeatures* images);

// Logits [B, T, V] of a batch: from batch.embeds when set, else from the ids.
torch::Tensor batch_forward(const LlamaModel& model, const SequenceBatch& batch, const LayerHooks* hooks);

// L_LM per sequence (eq. 3–4): mean cross-entropy of the answer tokens, [B] float32.
torch::Tensor answer_losses(const torch::Tensor& logits, const torch::Tensor& targets);

// Where a batch's loss is read: the answer positions of targets [B, T], found
// once per batch (one host sync) so that every step then runs with fixed shapes.
struct AnswerIndex {
  torch::Tensor flat;     // [N] int64: b * T + t of every answer position
  torch::Tensor row;      // [N] int64: its row b
  torch::Tensor targets;  // [N] int64: the token it must predict
  torch::Tensor counts;   // [B] float32: answer tokens per row (at least 1)
  int64_t rows = 0;
};
AnswerIndex make_answer_index(const torch::Tensor& targets);

// answer_losses from the final hidden states h [B, T, H], with the final norm
// and the LM head applied only at the answer positions: the same numbers
// without the logits of every other position (the bulk of a step's memory).
torch::Tensor answer_losses_at(const LlamaModel& model, const torch::Tensor& h, const AnswerIndex& index);

}  // namespace ngate
