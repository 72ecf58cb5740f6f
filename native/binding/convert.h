// The conversions every binding file shares: JavaScript values (numbers,
// typed arrays, the objects lib/ builds) to C++ and tensors back to typed
// arrays. Each throws a TypeError or RangeError that names the argument.
#pragma once
#include <napi.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "method/pairs.h"
#include "model/batch.h"

namespace ngate::binding {

torch::ScalarType parse_dtype(const std::string& s);
// cpu, cuda or cuda:N, checked against the GPUs this libtorch sees.
torch::Device parse_device(const std::string& s);

// A number field of a config object, named in the error when missing.
int64_t get_int(const Napi::Object& o, const char* key);
double get_double(const Napi::Object& o, const char* key);
bool get_bool(const Napi::Object& o, const char* key);
// o[key] when it is a number, else the fallback.
double number_or(const Napi::Object& o, const char* key, double fallback);

std::vector<int64_t> to_int64(const Napi::Value& v, const char* what);      // from an Int32Array
std::vector<int64_t> to_int_list(const Napi::Value& v, const char* what);   // from an array of numbers
// A [n0, n1, ...] float32 tensor from a Float32Array of that many values.
torch::Tensor to_float_tensor(const Napi::Value& v, std::vector<int64_t> shape, const char* what);
Napi::Float32Array to_float32_array(Napi::Env env, const torch::Tensor& t);

// { ids, subjectPositions, answerStart, image? } (lib/data/prepare.ts).
TrainSequence to_sequence(const Napi::Value& v, const std::string& where);
std::vector<TrainSequence> to_sequences(const Napi::Value& v, const char* what);
// [{ sensitive, benign }].
std::vector<TrainPair> to_pairs(const Napi::Value& v);

// { pixels: Float32Array [count·channels·size·size], count, channels, size, rows?: Int32Array }:
// the preprocessed images of one call (lib/model/image.ts), or undefined for none.
struct ImageInput {
  torch::Tensor pixels;       // [N, C, S, S] float32, CPU; undefined when no images
  std::vector<int64_t> rows;  // per batch row: its image, -1 for none (forward and generate)
};
ImageInput to_images(const Napi::Value& v);

}  // namespace ngate::binding
