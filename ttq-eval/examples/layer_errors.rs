//! Calibration output error of RTN, AWQ and GPTQ on single layers of a real model: a quick
//! check that the calibrated methods lower the error they optimise.
//!
//! `cargo run --release -p ttq-eval --example layer_errors -- MODEL [BITS] [LAYERS...]`

use burn::backend::NdArray;
use std::path::PathBuf;
use ttq_core::{Prepared, TensorOpsKernels};
use ttq_eval::{collect_statistics, sample_windows, CalibrationSampling, Dataset, MethodSpec};

type B = NdArray<f32>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = PathBuf::from(
        args.first()
            .ok_or("usage: layer_errors MODEL [BITS] [LAYERS...]")?,
    );
    let bits: u32 = args.get(1).map_or(Ok(3), |b| b.parse())?;
    let wanted: Vec<String> = args.iter().skip(2).cloned().collect();
    let device = Default::default();
    let mut loaded = ttq_models::load_model::<B>(&model, &device)?;
    let text = Dataset::WikiText2.load(&PathBuf::from("../shared/data"))?;
    let tokens = loaded.tokenizer.encode(&text, false)?;
    let sampling = CalibrationSampling {
        samples: 8,
        len: 256,
        seed: 0,
    };
    let wins = sample_windows(&tokens, &sampling, None)?;
    let stats = collect_statistics(&mut loaded.model, &wins, false)?;
    let methods: Vec<MethodSpec> = ["rtn", "awq", "gptq", "gptq:act"]
        .iter()
        .map(|m| MethodSpec::parse(&format!("{m}:w{bits}:g128")))
        .collect::<Result<_, _>>()?;
    for (name, layer) in loaded.model.linears_mut() {
        if !wanted.is_empty() && !wanted.iter().any(|w| name.contains(w.as_str())) {
            continue;
        }
        let w = layer.weight();
        let c = &stats[&name];
        let mut line = format!("{name:40}");
        for m in &methods {
            let method = m.build::<B>()?.expect("quantized");
            let Prepared::Fixed(q) = method.prepare(&w, Some(c), &TensorOpsKernels)? else {
                continue;
            };
            let err = c.output_error(w.clone() - q.effective_weight(&TensorOpsKernels));
            line += &format!(" {}={err:.4e}", m.label());
        }
        println!("{line}");
    }
    Ok(())
}
