// Gated delta rule for a few tokens (body for mx.fast.metal_kernel).
// One SIMD-group owns one state row S[b, hv, dv, :]; its 32 lanes hold
// Dk / 32 elements each in registers, so the state is read once and written
// once however many tokens (Steps) there are.
// q, k [B, Steps, Hk, Dk]; v, y [B, Steps, Hv, Dv]; g (log decay), beta
// [B, Steps, Hv]; state_in, state_out [B, Hv, Dv, Dk] float32.
// Template: InT (y's type), Dk, Dv, Hk, Hv, Steps.
constexpr int per_lane = Dk / 32;
const uint n = thread_position_in_grid.z;
const uint b = n / Hv;
const uint hv = n % Hv;
const uint hk = hv / (Hv / Hk);
const uint dv = thread_position_in_grid.y;
const uint lane = thread_index_in_simdgroup;

const device float* s_in = state_in + (n * Dv + dv) * Dk;
device float* s_out = state_out + (n * Dv + dv) * Dk;
float s[per_lane];
for (int i = 0; i < per_lane; ++i) {
  s[i] = s_in[lane + 32 * i];
}

for (int t = 0; t < Steps; ++t) {
  const uint qk_base = ((b * Steps + t) * Hk + hk) * Dk + lane;
  const uint head = (b * Steps + t) * Hv + hv;
  const float decay = metal::exp(static_cast<float>(g[head]));
  float kv = 0.0f;
  for (int i = 0; i < per_lane; ++i) {
    s[i] *= decay;
    kv += s[i] * static_cast<float>(k[qk_base + 32 * i]);
  }
  kv = simd_sum(kv);
  const float delta =
      (static_cast<float>(v[head * Dv + dv]) - kv) * static_cast<float>(beta[head]);
  float out = 0.0f;
  for (int i = 0; i < per_lane; ++i) {
    s[i] += static_cast<float>(k[qk_base + 32 * i]) * delta;
    out += s[i] * static_cast<float>(q[qk_base + 32 * i]);
  }
  out = simd_sum(out);
  if (lane == 0) {
    y[head * Dv + dv] = static_cast<InT>(out);
  }
}

for (int i = 0; i < per_lane; ++i) {
  s_out[lane + 32 * i] = s[i];
}
