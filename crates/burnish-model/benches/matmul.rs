//! GFLOP/s of the linear layers' matrix product ([`burnish_model::ops::matmul`]) on the CPU, in
//! fp32 and bf16, forward and both backward products, on the shapes of SmolLM2-135M and GPT-2
//! small with about 1,500 rows (a W1/W2 step's tokens). Prints one JSON line per shape and
//! precision; the bf16 kernel in use is named.
//!
//! ```text
//! cargo bench -p burnish-model --bench matmul
//! ```

use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Tensor};
use burnish_model::Precision;
use burnish_model::ops::matmul;

type Ad = Autodiff<Flex>;

fn main() {
    let kernel = burnish_model::precision::cpu_bf16_kernel().unwrap_or("portable");
    let device = Default::default();
    let shapes: [(usize, usize, usize); 5] = [
        (1504, 576, 576),
        (1504, 576, 1536),
        (1504, 1536, 576),
        (1504, 768, 3072),
        (256, 576, 49152),
    ];
    for (rows, d_in, d_out) in shapes {
        for precision in [Precision::Fp32, Precision::Bf16] {
            let x = Tensor::<Ad, 2>::random([rows, d_in], Distribution::Normal(0.0, 1.0), &device);
            let w =
                Tensor::<Ad, 2>::random([d_in, d_out], Distribution::Normal(0.0, 0.05), &device)
                    .require_grad();
            let x = x.require_grad();
            let flops = 2.0 * (rows * d_in * d_out) as f64;
            let (mut forward, mut backward) = (f64::INFINITY, f64::INFINITY);
            for _ in 0..4 {
                let started = Instant::now();
                let y = matmul(x.clone(), w.clone(), precision);
                let _ = y.clone().inner().into_data();
                let mid = Instant::now();
                let grads = y.sum().backward();
                let _ = x.grad(&grads).unwrap().into_data();
                let _ = w.grad(&grads).unwrap().into_data();
                forward = forward.min((mid - started).as_secs_f64());
                backward = backward.min(mid.elapsed().as_secs_f64());
            }
            println!(
                "{{\"shape\":[{rows},{d_in},{d_out}],\"precision\":\"{precision}\",\"bf16_kernel\":\"{kernel}\",\"forward_gflops\":{:.1},\"backward_gflops\":{:.1}}}",
                flops / forward / 1e9,
                2.0 * flops / backward / 1e9
            );
        }
    }
}
