//! `ttq demo`: RTN vs TTQ on one random layer with outlier input channels.

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use clap::Args;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::sync::Arc;
use ttq_core::{
    methods::{Rtn, Ttq},
    tensor_io::to_f32_vec,
    CalibrationPolicy, QuantLinear, QuantMethod, QuantSpec, TtqScaleConfig,
};

type B = NdArray<f32>;

/// Options of `ttq demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Output features of the layer.
    #[arg(long, default_value_t = 1024)]
    pub rows: usize,
    /// Input features of the layer.
    #[arg(long, default_value_t = 1024)]
    pub cols: usize,
    /// Tokens in the prompt.
    #[arg(long, default_value_t = 256)]
    pub tokens: usize,
    /// Number of outlier input channels.
    #[arg(long, default_value_t = 16)]
    pub outliers: usize,
    /// How much larger the outlier channels are.
    #[arg(long, default_value_t = 20.0)]
    pub outlier_gain: f32,
    /// Group size (a power of two >= 8, or `row`).
    #[arg(long, default_value = "128")]
    pub group: String,
    /// TTQ's alpha values, one column each (0.5 is the paper's default).
    #[arg(long, value_delimiter = ',', default_values_t = vec![0.5f32, 0.25])]
    pub alpha: Vec<f32>,
    /// TTQ's lambda.
    #[arg(long, default_value_t = 1e-4)]
    pub lambda: f32,
    /// Seed of the random layer and activations.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

fn normal(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f64 = rng.random::<f64>().max(1e-12);
            let u2: f64 = rng.random::<f64>();
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        })
        .collect()
}

fn rel_error(reference: &[f32], approx: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (r, a) in reference.iter().zip(approx) {
        num += (f64::from(*r) - f64::from(*a)).powi(2);
        den += f64::from(*r).powi(2);
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// Runs the demo and prints a table.
pub fn run(args: &DemoArgs) -> Result<(), Box<dyn std::error::Error>> {
    if args.rows == 0 || args.cols == 0 || args.tokens == 0 {
        return Err("rows, cols and tokens must be positive".into());
    }
    if args.outliers > args.cols {
        return Err(format!("--outliers {} exceeds --cols {}", args.outliers, args.cols).into());
    }
    if !(args.outlier_gain.is_finite() && args.outlier_gain > 0.0) {
        return Err(format!(
            "--outlier-gain {} must be a finite number > 0",
            args.outlier_gain
        )
        .into());
    }
    // The layer, its quantized copies and the activations, before allocating any of them.
    {
        use ttq_models::resources::{check_memory, product, sum};
        let needed = sum(&[
            product(&[12, args.rows, args.cols]),
            product(&[6, args.tokens, args.cols]),
            product(&[4, args.tokens, args.rows]),
        ])
        .and_then(|n| n.checked_mul(4));
        check_memory(
            &format!(
                "a {}x{} layer with {} tokens (--rows, --cols, --tokens)",
                args.rows, args.cols, args.tokens
            ),
            needed,
        )?;
    }
    let group = QuantSpec::parse_group(&args.group)?;
    let scales = args
        .alpha
        .iter()
        .map(|&a| TtqScaleConfig::new(a, args.lambda))
        .collect::<Result<Vec<_>, _>>()?;
    let device = Default::default();
    let mut rng = StdRng::seed_from_u64(args.seed);
    let w = normal(&mut rng, args.rows * args.cols);
    let mut x = normal(&mut rng, args.tokens * args.cols);
    let mut outlier_channels: Vec<usize> = (0..args.cols).collect();
    for i in 0..args.outliers {
        let j = rng.random_range(i..args.cols);
        outlier_channels.swap(i, j);
    }
    for row in x.chunks_exact_mut(args.cols) {
        for &c in &outlier_channels[..args.outliers] {
            row[c] *= args.outlier_gain;
        }
    }
    let w: Tensor<B, 2> = Tensor::from_data(TensorData::new(w, [args.rows, args.cols]), &device);
    let x: Tensor<B, 2> = Tensor::from_data(TensorData::new(x, [args.tokens, args.cols]), &device);
    let mut layer = QuantLinear::new(w, None)?;
    let y_fp = to_f32_vec(layer.forward(x.clone())?);

    println!(
        "layer {}x{}, {} tokens, {} outlier channels x{}, group {}, TTQ lambda {:e}, seed {}",
        args.rows,
        args.cols,
        args.tokens,
        args.outliers,
        args.outlier_gain,
        args.group,
        args.lambda,
        args.seed
    );
    println!("relative output error ||WX - W_hat X|| / ||WX||");
    let mut header = "| bits | RTN |".to_string();
    for a in &args.alpha {
        header.push_str(&format!(" TTQ a={a} | ratio to RTN |"));
    }
    println!("{header}");
    println!("|---:|---:|{}", "---:|---:|".repeat(args.alpha.len()));
    for bits in [2, 3, 4, 5, 8] {
        let spec = QuantSpec::new(bits, group, Default::default())?;
        let mut methods: Vec<Arc<dyn QuantMethod<B>>> = vec![Arc::new(Rtn::new(spec))];
        for s in &scales {
            methods.push(Arc::new(Ttq::new(spec, *s)?));
        }
        let mut errors = Vec::new();
        for m in methods {
            layer.set_method(m, CalibrationPolicy::EveryCall, None)?;
            errors.push(rel_error(&y_fp, &to_f32_vec(layer.forward(x.clone())?)));
        }
        let mut row = format!("| {bits} | {:.5} |", errors[0]);
        for e in &errors[1..] {
            row.push_str(&format!(" {e:.5} | {:.3} |", e / errors[0]));
        }
        println!("{row}");
    }
    Ok(())
}
