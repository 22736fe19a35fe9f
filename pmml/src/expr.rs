//! Compiled expressions (DerivedField bodies, Apply with built-in and user functions) and
//! predicates.

use crate::error::EvalError;
use crate::fields::{Ctx, FieldId, Interval};
use crate::value::{DataType, Value};
use std::cmp::Ordering;

/// Outlier handling of NormContinuous.
#[derive(Debug, Clone, Copy, PartialEq)]
#[allow(clippy::enum_variant_names)]
pub(crate) enum NormOutliers {
    AsIs,
    AsMissing,
    AsExtreme,
}

#[derive(Debug)]
pub(crate) enum Expr {
    Const(Value),
    Field {
        field: FieldId,
        map_missing_to: Option<Value>,
    },
    Param(usize),
    NormContinuous {
        field: FieldId,
        xs: Vec<f64>,
        ys: Vec<f64>,
        outliers: NormOutliers,
        map_missing_to: Option<f64>,
    },
    NormDiscrete {
        field: FieldId,
        value: Value,
        map_missing_to: Option<f64>,
    },
    Discretize {
        field: FieldId,
        bins: Vec<(Interval, Value)>,
        map_missing_to: Value,
        default: Value,
    },
    MapValues {
        inputs: Vec<FieldId>,
        rows: Vec<(Vec<Value>, Value)>,
        map_missing_to: Value,
        default: Value,
    },
    Apply {
        func: Func,
        args: Vec<Expr>,
        map_missing_to: Option<Value>,
        default: Option<Value>,
        invalid: ApplyInvalid,
    },
    Call {
        body: std::sync::Arc<UserFunction>,
        args: Vec<Expr>,
        map_missing_to: Option<Value>,
        default: Option<Value>,
    },
}

/// Apply's invalidValueTreatment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ApplyInvalid {
    ReturnInvalid,
    AsIs,
    AsMissing,
}

/// How a built-in function treats missing arguments (JPMML semantics).
#[derive(Debug, Clone, Copy, PartialEq)]
enum MissingPolicy {
    /// Arithmetic: any missing argument gives a missing result.
    Propagate,
    /// Aggregates: missing arguments are ignored; all missing gives missing.
    Skip,
    /// The function sees missing arguments itself.
    Tolerant,
    /// A missing argument is an error.
    Strict,
}

fn missing_arg(func: Func) -> EvalError {
    EvalError::Type(format!("function {func} cannot accept a missing argument"))
}

/// A DefineFunction, compiled.
#[derive(Debug)]
pub(crate) struct UserFunction {
    pub params: Vec<DataType>,
    pub data_type: DataType,
    pub body: Expr,
    /// The longest chain of user-function calls a call of it makes, itself included.
    pub depth: usize,
}

/// Built-in functions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Func {
    Add,
    Sub,
    Mul,
    Div,
    Modulo,
    Min,
    Max,
    Sum,
    Avg,
    Median,
    Product,
    Log10,
    Ln,
    Sqrt,
    Abs,
    Exp,
    Pow,
    Threshold,
    Floor,
    Ceil,
    Round,
    Rint,
    Ln1p,
    Expm1,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Atan2,
    Sinh,
    Cosh,
    Tanh,
    Hypot,
    IsMissing,
    IsNotMissing,
    IsValid,
    IsNotValid,
    Equal,
    NotEqual,
    LessThan,
    LessOrEqual,
    GreaterThan,
    GreaterOrEqual,
    And,
    Or,
    Not,
    IsIn,
    IsNotIn,
    If,
    Uppercase,
    Lowercase,
    Substring,
    TrimBlanks,
    Concat,
    StringLength,
    Replace,
    Matches,
    FormatNumber,
    Coalesce,
    Logit,
    Sigmoid,
    NormalCdf,
}

/// The built-in functions by PMML name, each function's own name first (then
/// the `x-` names of JPMML's extensions).
const FUNCTIONS: &[(&str, Func)] = {
    use Func::*;
    &[
        ("+", Add),
        ("-", Sub),
        ("*", Mul),
        ("/", Div),
        ("modulo", Modulo),
        ("min", Min),
        ("max", Max),
        ("sum", Sum),
        ("avg", Avg),
        ("median", Median),
        ("product", Product),
        ("log10", Log10),
        ("ln", Ln),
        ("sqrt", Sqrt),
        ("abs", Abs),
        ("exp", Exp),
        ("pow", Pow),
        ("threshold", Threshold),
        ("floor", Floor),
        ("ceil", Ceil),
        ("round", Round),
        ("rint", Rint),
        ("x-rint", Rint),
        ("ln1p", Ln1p),
        ("x-ln1p", Ln1p),
        ("expm1", Expm1),
        ("x-expm1", Expm1),
        ("sin", Sin),
        ("x-sin", Sin),
        ("cos", Cos),
        ("x-cos", Cos),
        ("tan", Tan),
        ("x-tan", Tan),
        ("asin", Asin),
        ("x-asin", Asin),
        ("acos", Acos),
        ("x-acos", Acos),
        ("atan", Atan),
        ("x-atan", Atan),
        ("atan2", Atan2),
        ("x-atan2", Atan2),
        ("sinh", Sinh),
        ("x-sinh", Sinh),
        ("cosh", Cosh),
        ("x-cosh", Cosh),
        ("tanh", Tanh),
        ("x-tanh", Tanh),
        ("hypot", Hypot),
        ("x-hypot", Hypot),
        ("isMissing", IsMissing),
        ("isNotMissing", IsNotMissing),
        ("isValid", IsValid),
        ("isNotValid", IsNotValid),
        ("equal", Equal),
        ("notEqual", NotEqual),
        ("lessThan", LessThan),
        ("lessOrEqual", LessOrEqual),
        ("greaterThan", GreaterThan),
        ("greaterOrEqual", GreaterOrEqual),
        ("and", And),
        ("or", Or),
        ("not", Not),
        ("isIn", IsIn),
        ("isNotIn", IsNotIn),
        ("if", If),
        ("uppercase", Uppercase),
        ("lowercase", Lowercase),
        ("substring", Substring),
        ("trimBlanks", TrimBlanks),
        ("concat", Concat),
        ("stringLength", StringLength),
        ("replace", Replace),
        ("matches", Matches),
        ("formatNumber", FormatNumber),
        ("coalesce", Coalesce),
        ("x-coalesce", Coalesce),
        ("logit", Logit),
        ("x-logit", Logit),
        ("sigmoid", Sigmoid),
        ("x-sigmoid", Sigmoid),
        ("normalCDF", NormalCdf),
        ("x-normalCDF", NormalCdf),
    ]
};

impl Func {
    pub fn by_name(name: &str) -> Option<Func> {
        FUNCTIONS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    /// The function's PMML name.
    pub fn name(self) -> &'static str {
        FUNCTIONS
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("?", |(n, _)| n)
    }

    fn missing_policy(self) -> MissingPolicy {
        use Func::*;
        match self {
            Add | Sub | Mul | Div | Modulo => MissingPolicy::Propagate,
            Min | Max | Sum | Avg | Median | Product => MissingPolicy::Skip,
            IsMissing | IsNotMissing | IsValid | IsNotValid | IsIn | IsNotIn | Coalesce
            | Concat => MissingPolicy::Tolerant,
            _ => MissingPolicy::Strict,
        }
    }
}

/// The function's PMML name, quoted, as messages show it.
impl std::fmt::Display for Func {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.name())
    }
}

fn type_err(func: Func, v: &Value) -> EvalError {
    EvalError::Type(format!(
        "function {func}: unexpected argument {}",
        v.shown()
    ))
}

fn num(func: Func, v: &Value) -> Result<f64, EvalError> {
    match v {
        Value::String(s) => crate::value::parse_f64(s).ok_or_else(|| type_err(func, v)),
        other => other.as_f64().ok_or_else(|| type_err(func, v)),
    }
}

fn boolean(func: Func, v: &Value) -> Result<Option<bool>, EvalError> {
    match v {
        Value::Missing => Ok(None),
        Value::Boolean(b) => Ok(Some(*b)),
        Value::String(s) => match s.as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(type_err(func, v)),
        },
        other => match other.as_f64() {
            Some(1.0) => Ok(Some(true)),
            Some(0.0) => Ok(Some(false)),
            _ => Err(type_err(func, v)),
        },
    }
}

/// The common numeric type of arithmetic arguments (as JPMML: double > float > integer).
fn common_numeric(args: &[Value]) -> DataType {
    let mut dt = DataType::Integer;
    for a in args {
        match a {
            Value::Double(_) | Value::String(_) => return DataType::Double,
            Value::Float(_) => dt = DataType::Float,
            _ => {}
        }
    }
    dt
}

fn typed(x: f64, dt: DataType) -> Value {
    match dt {
        DataType::Float => Value::Float(x as f32),
        DataType::Integer if x.fract() == 0.0 && x.is_finite() && x.abs() < 9.2e18 => {
            Value::Integer(x as i64)
        }
        _ => Value::Double(x),
    }
}

/// Float-typed results are rounded to 32 bits; others stay double.
fn real(x: f64, dt: DataType) -> Value {
    match dt {
        DataType::Float => Value::Float(x as f32),
        _ => Value::Double(x),
    }
}

/// Compares two values for the comparison functions/predicates, converting a string to a number
/// when the other side is a number.
pub(crate) fn compare_values(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::String(s), other) | (other, Value::String(s))
            if !matches!(other, Value::String(_)) =>
        {
            let x = crate::value::parse_f64(s)?;
            let y = other.as_f64()?;
            let (l, r) = if matches!(a, Value::String(_)) {
                (x, y)
            } else {
                (y, x)
            };
            l.partial_cmp(&r)
        }
        _ => a.compare(b),
    }
}

fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x == y,
        _ => compare_values(a, b) == Some(Ordering::Equal),
    }
}

/// Standard normal CDF, accurate to double precision (W. J. Cody's erfc rational approximations).
pub(crate) fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// Complementary error function (Cody 1969), relative accuracy ~1e-16.
#[allow(clippy::excessive_precision)]
pub(crate) fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    let ax = x.abs();
    if ax < 0.5 {
        return 1.0 - erf_small(x);
    }
    let r = if ax < 4.0 {
        const P: [f64; 9] = [
            5.641_884_969_886_700_9e-1,
            8.883_149_794_388_376e0,
            6.611_919_063_714_163e1,
            2.986_351_381_974_001_3e2,
            8.819_522_212_417_691e2,
            1.712_047_612_634_070_7e3,
            2.051_078_377_826_071_6e3,
            1.230_339_354_797_997_2e3,
            2.153_115_354_744_038_3e-8,
        ];
        const Q: [f64; 8] = [
            1.574_492_611_070_983_5e1,
            1.176_939_508_913_125e2,
            5.371_811_018_620_099e2,
            1.621_389_574_566_690_2e3,
            3.290_799_235_733_459_6e3,
            4.362_619_090_143_247e3,
            3.439_367_674_143_721_6e3,
            1.230_339_354_803_749_5e3,
        ];
        let mut num = P[8] * ax;
        let mut den = ax;
        for i in 0..7 {
            num = (num + P[i]) * ax;
            den = (den + Q[i]) * ax;
        }
        let res = (num + P[7]) / (den + Q[7]);
        let ysq = (ax * 16.0).trunc() / 16.0;
        let del = (ax - ysq) * (ax + ysq);
        (-ysq * ysq).exp() * (-del).exp() * res
    } else if ax < 26.7 {
        const P: [f64; 6] = [
            3.053_266_349_612_323_4e-1,
            3.603_448_999_498_044_4e-1,
            1.257_817_261_112_292_6e-1,
            1.608_378_514_874_227_7e-2,
            6.587_491_615_298_378e-4,
            1.631_538_713_730_209_7e-2,
        ];
        const Q: [f64; 5] = [
            2.568_520_192_289_822_4e0,
            1.872_952_849_923_460_4e0,
            5.279_051_029_514_284e-1,
            6.051_834_131_244_132e-2,
            2.335_204_976_268_691_8e-3,
        ];
        let z = 1.0 / (ax * ax);
        let mut num = P[5] * z;
        let mut den = z;
        for i in 0..4 {
            num = (num + P[i]) * z;
            den = (den + Q[i]) * z;
        }
        let mut res = z * (num + P[4]) / (den + Q[4]);
        res = (1.0 / std::f64::consts::PI.sqrt() - res) / ax;
        let ysq = (ax * 16.0).trunc() / 16.0;
        let del = (ax - ysq) * (ax + ysq);
        (-ysq * ysq).exp() * (-del).exp() * res
    } else {
        0.0
    };
    if x < 0.0 {
        2.0 - r
    } else {
        r
    }
}

#[allow(clippy::excessive_precision)]
fn erf_small(x: f64) -> f64 {
    const A: [f64; 5] = [
        3.161_123_743_870_565_6e0,
        1.138_641_541_510_501_6e2,
        3.774_852_376_853_020_2e2,
        3.209_377_589_138_469_5e3,
        1.857_777_061_846_031_5e-1,
    ];
    const B: [f64; 4] = [
        2.360_129_095_234_412_2e1,
        2.440_246_379_344_441_7e2,
        1.282_616_526_077_372_3e3,
        2.844_236_833_439_170_6e3,
    ];
    let z = x * x;
    let mut num = A[4] * z;
    let mut den = z;
    for i in 0..3 {
        num = (num + A[i]) * z;
        den = (den + B[i]) * z;
    }
    x * (num + A[3]) / (den + B[3])
}

impl Expr {
    pub fn eval(&self, ctx: &mut Ctx) -> Result<Value, EvalError> {
        match self {
            Expr::Apply { .. } | Expr::Call { .. } => {
                // Bound the total recursion of scoring (nested Apply inside chained derived
                // fields), whatever the document.
                if ctx.depth >= crate::fields::MAX_EVAL_DEPTH {
                    return Err(EvalError::InvalidResult(
                        "expressions are nested too deeply to evaluate".into(),
                    ));
                }
                ctx.applications += 1;
                if ctx.applications > crate::fields::MAX_APPLICATIONS {
                    return Err(EvalError::InvalidResult(format!(
                        "more than {} function applications for one record",
                        crate::fields::MAX_APPLICATIONS
                    )));
                }
                ctx.depth += 1;
                let r = self.eval_node(ctx);
                ctx.depth -= 1;
                r
            }
            _ => self.eval_node(ctx),
        }
    }

    fn eval_node(&self, ctx: &mut Ctx) -> Result<Value, EvalError> {
        match self {
            Expr::Const(v) => Ok(v.clone()),
            Expr::Field {
                field,
                map_missing_to,
            } => {
                let v = ctx.get(*field)?;
                match (v, map_missing_to) {
                    (Value::Missing, Some(m)) => Ok(m.clone()),
                    (v, _) => Ok(v),
                }
            }
            Expr::Param(i) => Ok(ctx
                .params
                .get(ctx.frame + i)
                .cloned()
                .unwrap_or(Value::Missing)),
            Expr::NormContinuous {
                field,
                xs,
                ys,
                outliers,
                map_missing_to,
            } => {
                let Some(x) = ctx.num(*field)? else {
                    return Ok(map_missing_to.map_or(Value::Missing, Value::Double));
                };
                Ok(norm_continuous(x, xs, ys, *outliers).map_or(Value::Missing, Value::Double))
            }
            Expr::NormDiscrete {
                field,
                value,
                map_missing_to,
            } => {
                let v = ctx.get(*field)?;
                if v.is_missing() {
                    return Ok(map_missing_to.map_or(Value::Missing, Value::Double));
                }
                Ok(Value::Double(if values_equal(&v, value) {
                    1.0
                } else {
                    0.0
                }))
            }
            Expr::Discretize {
                field,
                bins,
                map_missing_to,
                default,
            } => {
                let Some(x) = ctx.num(*field)? else {
                    return Ok(map_missing_to.clone());
                };
                Ok(bins
                    .iter()
                    .find(|(i, _)| i.contains(x))
                    .map_or_else(|| default.clone(), |(_, v)| v.clone()))
            }
            Expr::MapValues {
                inputs,
                rows,
                map_missing_to,
                default,
            } => {
                let mut key = Vec::with_capacity(inputs.len());
                for f in inputs {
                    let v = ctx.get(*f)?;
                    if v.is_missing() {
                        return Ok(map_missing_to.clone());
                    }
                    key.push(v);
                }
                Ok(rows
                    .iter()
                    .find(|(k, _)| {
                        k.iter()
                            .zip(&key)
                            .all(|(a, b)| values_equal(b, a) || a.to_string() == b.to_string())
                    })
                    .map_or_else(|| default.clone(), |(_, v)| v.clone()))
            }
            Expr::Apply {
                func,
                args,
                map_missing_to,
                default,
                invalid,
            } => {
                let mut vals = Vec::with_capacity(args.len());
                for a in args {
                    if *func == Func::If && vals.len() == 1 {
                        // Lazy branches; a missing condition is an error (as in JPMML).
                        let cond = match boolean(*func, &vals[0])? {
                            Some(c) => c,
                            None => {
                                return match map_missing_to {
                                    Some(m) => Ok(m.clone()),
                                    None => Err(missing_arg(*func)),
                                }
                            }
                        };
                        let out = if cond {
                            args[1].eval(ctx)?
                        } else {
                            match args.get(2) {
                                Some(e) => e.eval(ctx)?,
                                None => Value::Missing,
                            }
                        };
                        if let (Value::Missing, Some(m)) = (&out, map_missing_to) {
                            return Ok(m.clone());
                        }
                        return Ok(finish(out, &None, default));
                    }
                    let v = a.eval(ctx)?;
                    if v.is_missing() {
                        if let Some(m) = map_missing_to {
                            return Ok(m.clone());
                        }
                    }
                    vals.push(v);
                }
                let out = match func.missing_policy() {
                    MissingPolicy::Propagate if vals.iter().any(Value::is_missing) => {
                        Value::Missing
                    }
                    MissingPolicy::Strict if vals.iter().any(Value::is_missing) => {
                        return Err(missing_arg(*func))
                    }
                    MissingPolicy::Skip => {
                        let present: Vec<Value> =
                            vals.into_iter().filter(|v| !v.is_missing()).collect();
                        if present.is_empty() {
                            Value::Missing
                        } else {
                            apply(*func, &present)?
                        }
                    }
                    _ => apply(*func, &vals)?,
                };
                // NaN is an invalid result; infinities are values (as in JPMML).
                let is_invalid = match out {
                    Value::Double(x) => x.is_nan(),
                    Value::Float(x) => x.is_nan(),
                    _ => false,
                };
                if is_invalid {
                    return match invalid {
                        ApplyInvalid::ReturnInvalid => Err(EvalError::InvalidResult(format!(
                            "function {func} returned an invalid value"
                        ))),
                        ApplyInvalid::AsIs => Ok(out),
                        ApplyInvalid::AsMissing => Ok(default.clone().unwrap_or(Value::Missing)),
                    };
                }
                Ok(finish(out, &None, default))
            }
            Expr::Call {
                body,
                args,
                map_missing_to,
                default,
            } => {
                let mut vals = Vec::with_capacity(args.len());
                for (a, dt) in args.iter().zip(&body.params) {
                    let v = a.eval(ctx)?;
                    if v.is_missing() {
                        if let Some(m) = map_missing_to {
                            return Ok(m.clone());
                        }
                    }
                    vals.push(v.cast(*dt).unwrap_or(v));
                }
                let saved = ctx.frame;
                ctx.frame = ctx.params.len();
                ctx.params.extend(vals);
                let r = body.body.eval(ctx);
                ctx.params.truncate(ctx.frame);
                ctx.frame = saved;
                let v = r?;
                let v = v.cast(body.data_type).unwrap_or(v);
                Ok(finish(v, &None, default))
            }
        }
    }
}

fn finish(v: Value, map_missing_to: &Option<Value>, default: &Option<Value>) -> Value {
    if v.is_missing() {
        if let Some(m) = map_missing_to {
            return m.clone();
        }
        if let Some(d) = default {
            return d.clone();
        }
    }
    v
}

pub(crate) fn norm_continuous(
    x: f64,
    xs: &[f64],
    ys: &[f64],
    outliers: NormOutliers,
) -> Option<f64> {
    let n = xs.len();
    if n < 2 {
        return None;
    }
    let (lo, hi) = if x < xs[0] {
        match outliers {
            NormOutliers::AsMissing => return None,
            NormOutliers::AsExtreme => return Some(ys[0]),
            NormOutliers::AsIs => (0, 1),
        }
    } else if x > xs[n - 1] {
        match outliers {
            NormOutliers::AsMissing => return None,
            NormOutliers::AsExtreme => return Some(ys[n - 1]),
            NormOutliers::AsIs => (n - 2, n - 1),
        }
    } else {
        let mut i = 0;
        while i + 2 < n && x > xs[i + 1] {
            i += 1;
        }
        (i, i + 1)
    };
    let (x1, x2, y1, y2) = (xs[lo], xs[hi], ys[lo], ys[hi]);
    Some(y1 + (x - x1) / (x2 - x1) * (y2 - y1))
}

/// Inverse of a NormContinuous mapping (used by NeuralOutputs of regression networks).
pub(crate) fn denorm_continuous(y: f64, xs: &[f64], ys: &[f64]) -> Option<f64> {
    let n = ys.len();
    if n < 2 {
        return None;
    }
    let mut i = 0;
    while i + 2 < n && y > ys[i + 1] {
        i += 1;
    }
    let (x1, x2, y1, y2) = (xs[i], xs[i + 1], ys[i], ys[i + 1]);
    Some(x1 + (y - y1) / (y2 - y1) * (x2 - x1))
}

fn apply(func: Func, a: &[Value]) -> Result<Value, EvalError> {
    use Func::*;
    let arity = |n: usize| -> Result<(), EvalError> {
        if a.len() == n {
            Ok(())
        } else {
            Err(EvalError::Type(format!(
                "function {func} expects {n} arguments, got {}",
                a.len()
            )))
        }
    };
    Ok(match func {
        Add | Sub | Mul | Div | Modulo => {
            arity(2)?;
            let (x, y) = (num(func, &a[0])?, num(func, &a[1])?);
            let dt = common_numeric(a);
            let r = match func {
                Add => x + y,
                Sub => x - y,
                Mul => x * y,
                Div => x / y,
                _ => x - y * (x / y).floor(),
            };
            if func == Div {
                // Integer / integer stays integer in JPMML (truncated).
                if dt == DataType::Integer {
                    if !r.is_finite() {
                        return Ok(Value::Double(r));
                    }
                    return Ok(Value::Integer(r.trunc() as i64));
                }
                return Ok(real(r, dt));
            }
            typed(r, dt)
        }
        Min | Max | Sum | Avg | Median | Product => {
            if a.is_empty() {
                return Err(EvalError::Type(format!("function {func} needs arguments")));
            }
            let xs = a
                .iter()
                .map(|v| num(func, v))
                .collect::<Result<Vec<_>, _>>()?;
            let dt = common_numeric(a);
            match func {
                Min => typed(xs.iter().copied().fold(f64::INFINITY, f64::min), dt),
                Max => typed(xs.iter().copied().fold(f64::NEG_INFINITY, f64::max), dt),
                Sum => typed(xs.iter().sum(), dt),
                Product => typed(xs.iter().product(), dt),
                Avg => real(
                    xs.iter().sum::<f64>() / xs.len() as f64,
                    if dt == DataType::Float {
                        dt
                    } else {
                        DataType::Double
                    },
                ),
                _ => {
                    let mut s = xs;
                    s.sort_by(|p, q| crate::value::java_cmp(*p, *q));
                    let n = s.len();
                    let m = if n % 2 == 1 {
                        s[n / 2]
                    } else {
                        (s[n / 2 - 1] + s[n / 2]) / 2.0
                    };
                    real(
                        m,
                        if dt == DataType::Float {
                            dt
                        } else {
                            DataType::Double
                        },
                    )
                }
            }
        }
        Log10 | Ln | Sqrt | Exp | Ln1p | Expm1 | Sin | Cos | Tan | Asin | Acos | Atan | Sinh
        | Cosh | Tanh | Logit | Sigmoid | NormalCdf => {
            arity(1)?;
            let x = num(func, &a[0])?;
            let dt = if matches!(a[0], Value::Float(_)) {
                DataType::Float
            } else {
                DataType::Double
            };
            let r = match func {
                Log10 => x.log10(),
                Ln => x.ln(),
                Sqrt => x.sqrt(),
                Exp => x.exp(),
                Ln1p => x.ln_1p(),
                Expm1 => x.exp_m1(),
                Sin => x.sin(),
                Cos => x.cos(),
                Tan => x.tan(),
                Asin => x.asin(),
                Acos => x.acos(),
                Atan => x.atan(),
                Sinh => x.sinh(),
                Cosh => x.cosh(),
                Tanh => x.tanh(),
                Logit => (x / (1.0 - x)).ln(),
                Sigmoid => 1.0 / (1.0 + (-x).exp()),
                _ => normal_cdf(x),
            };
            real(r, dt)
        }
        Abs | Floor | Ceil | Round | Rint => {
            arity(1)?;
            let x = num(func, &a[0])?;
            match func {
                Abs => typed(x.abs(), common_numeric(a)),
                // Java Math.round: floor(x + 0.5)
                Round => typed((x + 0.5).floor(), DataType::Integer),
                Floor => typed(x.floor(), DataType::Integer),
                Ceil => typed(x.ceil(), DataType::Integer),
                _ => real(x.round_ties_even(), common_numeric(a)),
            }
        }
        Pow | Atan2 | Hypot => {
            arity(2)?;
            let (x, y) = (num(func, &a[0])?, num(func, &a[1])?);
            let r = match func {
                Pow => x.powf(y),
                Atan2 => x.atan2(y),
                _ => x.hypot(y),
            };
            let dt = common_numeric(a);
            if func == Pow {
                typed(r, dt)
            } else {
                real(r, dt)
            }
        }
        Threshold => {
            arity(2)?;
            let (x, y) = (num(func, &a[0])?, num(func, &a[1])?);
            Value::Integer(i64::from(x > y))
        }
        IsMissing => {
            arity(1)?;
            Value::Boolean(a[0].is_missing())
        }
        IsNotMissing => {
            arity(1)?;
            Value::Boolean(!a[0].is_missing())
        }
        IsValid => {
            arity(1)?;
            Value::Boolean(!a[0].is_missing())
        }
        IsNotValid => {
            arity(1)?;
            Value::Boolean(false)
        }
        Equal | NotEqual => {
            arity(2)?;
            let eq = values_equal(&a[0], &a[1]);
            Value::Boolean(if func == Equal { eq } else { !eq })
        }
        LessThan | LessOrEqual | GreaterThan | GreaterOrEqual => {
            arity(2)?;
            let o = compare_values(&a[0], &a[1]).ok_or_else(|| type_err(func, &a[1]))?;
            Value::Boolean(match func {
                LessThan => o == Ordering::Less,
                LessOrEqual => o != Ordering::Greater,
                GreaterThan => o == Ordering::Greater,
                _ => o != Ordering::Less,
            })
        }
        And | Or => {
            if a.len() < 2 {
                return Err(EvalError::Type(format!(
                    "function {func} needs at least 2 arguments"
                )));
            }
            // Three-valued logic.
            let mut unknown = false;
            for v in a {
                match boolean(func, v)? {
                    Some(b) if b == (func == Or) => return Ok(Value::Boolean(b)),
                    Some(_) => {}
                    None => unknown = true,
                }
            }
            if unknown {
                Value::Missing
            } else {
                Value::Boolean(func == And)
            }
        }
        Not => {
            arity(1)?;
            match boolean(func, &a[0])? {
                Some(b) => Value::Boolean(!b),
                None => Value::Missing,
            }
        }
        IsIn | IsNotIn => {
            if a.is_empty() {
                return Err(EvalError::Type(format!("function {func} needs arguments")));
            }
            let found = a[1..].iter().any(|v| values_equal(&a[0], v));
            Value::Boolean(if func == IsIn { found } else { !found })
        }
        If => Value::Missing,
        Coalesce => a
            .iter()
            .find(|v| !v.is_missing())
            .cloned()
            .unwrap_or(Value::Missing),
        Uppercase | Lowercase | TrimBlanks | StringLength => {
            arity(1)?;
            let s = a[0].to_string();
            match func {
                Uppercase => Value::String(s.to_uppercase()),
                Lowercase => Value::String(s.to_lowercase()),
                TrimBlanks => Value::String(s.trim().to_string()),
                _ => Value::Integer(s.chars().count() as i64),
            }
        }
        Substring => {
            arity(3)?;
            let s = a[0].to_string();
            let start = num(func, &a[1])? as i64;
            let len = num(func, &a[2])? as i64;
            if start < 1 || len < 0 {
                return Err(EvalError::InvalidResult(format!(
                    "substring({s:?}, {start}, {len})"
                )));
            }
            Value::String(
                s.chars()
                    .skip((start - 1) as usize)
                    .take(len as usize)
                    .collect(),
            )
        }
        // Missing arguments are skipped.
        Concat => Value::String(
            a.iter()
                .filter(|v| !v.is_missing())
                .map(|v| v.to_string())
                .collect(),
        ),
        Replace => {
            arity(3)?;
            let re = regex(&a[1].to_string())?;
            // PCRE-style "$$" is a literal dollar.
            let replacement = a[2].to_string().replace("$$", "$$$$");
            Value::String(
                re.replace_all(&a[0].to_string(), replacement.as_str())
                    .into_owned(),
            )
        }
        Matches => {
            arity(2)?;
            // Any substring matching counts.
            Value::Boolean(regex(&a[1].to_string())?.is_match(&a[0].to_string()))
        }
        FormatNumber => {
            arity(2)?;
            let x = num(func, &a[0])?;
            Value::String(format_number(x, &a[1].to_string(), &a[0])?)
        }
    })
}

fn regex(pattern: &str) -> Result<regex::Regex, EvalError> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| EvalError::Type(format!("invalid regular expression {pattern:?}: {e}")))
}

/// Rounds the shortest decimal representation of `x` half-up to `prec` fraction digits, as
/// Java's `String.format("%.Nf")` does.
fn java_fixed(x: f64, prec: usize) -> String {
    if !x.is_finite() {
        return Value::Double(x).to_string();
    }
    let neg = x < 0.0;
    // Shortest round-trip digits, in plain (non-exponent) form.
    let plain = format!("{:?}", x.abs());
    let plain = if plain.contains('e') {
        format!("{:.*}", 340, x.abs())
    } else {
        plain
    };
    let (int, frac) = plain.split_once('.').unwrap_or((&plain, ""));
    let mut digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
    let int_len = int.len();
    let keep = int_len + prec;
    if digits.len() > keep {
        let round_up = digits[keep] >= 5;
        digits.truncate(keep);
        if round_up {
            let mut i = keep;
            loop {
                if i == 0 {
                    digits.insert(0, 1);
                    break;
                }
                i -= 1;
                if digits[i] == 9 {
                    digits[i] = 0;
                } else {
                    digits[i] += 1;
                    break;
                }
            }
        }
    } else {
        digits.resize(keep, 0);
    }
    let int_digits = digits.len() - prec;
    let mut out = String::new();
    if neg && digits.iter().any(|d| *d != 0) {
        out.push('-');
    }
    for d in &digits[..int_digits] {
        out.push((b'0' + d) as char);
    }
    if int_digits == 0 {
        out.push('0');
    }
    if prec > 0 {
        out.push('.');
        for d in &digits[int_digits..] {
            out.push((b'0' + d) as char);
        }
    }
    out
}

/// A subset of Java's `String.format` for one number: `%d`, `%s`, `%f`, `%.Nf` (other text is
/// copied). Anything else is an error rather than a guess.
fn format_number(x: f64, pattern: &str, original: &Value) -> Result<String, EvalError> {
    let mut out = String::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        while let Some(&n) = chars.peek() {
            spec.push(n);
            chars.next();
            if n.is_ascii_alphabetic() || n == '%' {
                break;
            }
        }
        match spec.as_str() {
            "%" => out.push('%'),
            "d" => match original {
                Value::Integer(i) => out.push_str(&i.to_string()),
                _ => {
                    return Err(EvalError::Type(format!(
                        "formatNumber: %d needs an integer, got {}",
                        original.shown()
                    )))
                }
            },
            "s" => out.push_str(&original.to_string()),
            "f" => out.push_str(&java_fixed(x, 6)),
            s if s.starts_with('.') && s.ends_with('f') => {
                let prec = s[1..s.len() - 1].parse::<usize>().map_err(|_| {
                    EvalError::Type(format!("formatNumber: unsupported pattern {pattern:?}"))
                })?;
                out.push_str(&java_fixed(x, prec.min(340)));
            }
            _ => {
                return Err(EvalError::Type(format!(
                    "formatNumber: unsupported pattern {pattern:?}"
                )))
            }
        }
    }
    Ok(out)
}

/// A compiled predicate.
#[derive(Debug)]
pub(crate) enum Predicate {
    True,
    False,
    Simple {
        field: FieldId,
        op: SimpleOp,
        value: Value,
    },
    /// A SimplePredicate comparing a numeric field with a numeric constant (never
    /// isMissing/isNotMissing): both sides are exact f64 widenings of the field's type (f32 for
    /// float fields), so comparing in f64 gives the same answer as comparing in the field's type.
    Num {
        field: FieldId,
        op: SimpleOp,
        c: f64,
    },
    Set {
        field: FieldId,
        is_in: bool,
        values: Vec<Value>,
    },
    Compound {
        op: BoolOp,
        preds: Vec<Predicate>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum SimpleOp {
    Equal,
    NotEqual,
    LessThan,
    LessOrEqual,
    GreaterThan,
    GreaterOrEqual,
    IsMissing,
    IsNotMissing,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum BoolOp {
    And,
    Or,
    Xor,
    Surrogate,
}

impl Predicate {
    /// Three-valued evaluation: `None` is UNKNOWN.
    pub fn eval(&self, ctx: &mut Ctx) -> Result<Option<bool>, EvalError> {
        Ok(match self {
            Predicate::True => Some(true),
            Predicate::False => Some(false),
            Predicate::Num { field, op, c } => {
                let Some(x) = ctx.num(*field)? else {
                    return Ok(None);
                };
                let c = *c;
                Some(match op {
                    SimpleOp::Equal => x == c,
                    SimpleOp::NotEqual => x != c,
                    SimpleOp::LessThan => x < c,
                    SimpleOp::LessOrEqual => x <= c,
                    SimpleOp::GreaterThan => x > c,
                    _ => x >= c,
                })
            }
            Predicate::Simple { field, op, value } => {
                // Fast path: a numeric field against a numeric constant. Both sides are exact
                // f64 widenings of the field's type (f32 for float fields), so comparing in f64
                // gives the same answer as comparing in the field's type.
                if let (true, Some(c), false) = (
                    ctx.fields[*field].data_type.is_numeric(),
                    value.as_f64(),
                    matches!(op, SimpleOp::IsMissing | SimpleOp::IsNotMissing),
                ) {
                    let Some(x) = ctx.num(*field)? else {
                        return Ok(None);
                    };
                    return Ok(Some(match op {
                        SimpleOp::Equal => x == c,
                        SimpleOp::NotEqual => x != c,
                        SimpleOp::LessThan => x < c,
                        SimpleOp::LessOrEqual => x <= c,
                        SimpleOp::GreaterThan => x > c,
                        _ => x >= c,
                    }));
                }
                let v = ctx.get(*field)?;
                match op {
                    SimpleOp::IsMissing => Some(v.is_missing()),
                    SimpleOp::IsNotMissing => Some(!v.is_missing()),
                    _ if v.is_missing() => None,
                    SimpleOp::Equal => Some(values_equal(&v, value)),
                    SimpleOp::NotEqual => Some(!values_equal(&v, value)),
                    _ => {
                        let o = compare_values(&v, value).ok_or_else(|| {
                            EvalError::Type(format!(
                                "cannot compare {} with {}",
                                v.shown(),
                                value.shown()
                            ))
                        })?;
                        Some(match op {
                            SimpleOp::LessThan => o == Ordering::Less,
                            SimpleOp::LessOrEqual => o != Ordering::Greater,
                            SimpleOp::GreaterThan => o == Ordering::Greater,
                            _ => o != Ordering::Less,
                        })
                    }
                }
            }
            Predicate::Set {
                field,
                is_in,
                values,
            } => {
                let v = ctx.get(*field)?;
                if v.is_missing() {
                    None
                } else {
                    let found = values.iter().any(|x| values_equal(&v, x));
                    Some(found == *is_in)
                }
            }
            Predicate::Compound { op, preds } => match op {
                BoolOp::And => {
                    let mut unknown = false;
                    for p in preds {
                        match p.eval(ctx)? {
                            Some(false) => return Ok(Some(false)),
                            Some(true) => {}
                            None => unknown = true,
                        }
                    }
                    if unknown {
                        None
                    } else {
                        Some(true)
                    }
                }
                BoolOp::Or => {
                    let mut unknown = false;
                    for p in preds {
                        match p.eval(ctx)? {
                            Some(true) => return Ok(Some(true)),
                            Some(false) => {}
                            None => unknown = true,
                        }
                    }
                    if unknown {
                        None
                    } else {
                        Some(false)
                    }
                }
                BoolOp::Xor => {
                    let mut acc = false;
                    for p in preds {
                        match p.eval(ctx)? {
                            Some(b) => acc ^= b,
                            None => return Ok(None),
                        }
                    }
                    Some(acc)
                }
                BoolOp::Surrogate => {
                    for p in preds {
                        if let Some(b) = p.eval(ctx)? {
                            return Ok(Some(b));
                        }
                    }
                    None
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_cdf_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-16);
        assert!((normal_cdf(1.0) - 0.841_344_746_068_542_9).abs() < 1e-15);
        assert!((normal_cdf(-2.5) - 0.006_209_665_325_776_132).abs() < 1e-17);
    }

    #[test]
    fn java_style_fixed_formatting() {
        assert_eq!(java_fixed(0.125, 2), "0.13");
        assert_eq!(java_fixed(1.0005, 3), "1.001");
        assert_eq!(java_fixed(-2.5, 0), "-3");
        assert_eq!(java_fixed(9.999, 2), "10.00");
        assert_eq!(java_fixed(3.0, 3), "3.000");
        assert_eq!(
            format_number(2.5, "x=%.1f%%", &Value::Double(2.5)).unwrap(),
            "x=2.5%"
        );
    }

    #[test]
    fn norm_continuous_interpolates_and_extrapolates() {
        let xs = [0.0, 10.0, 20.0];
        let ys = [0.0, 1.0, 3.0];
        assert_eq!(
            norm_continuous(5.0, &xs, &ys, NormOutliers::AsIs),
            Some(0.5)
        );
        assert_eq!(
            norm_continuous(15.0, &xs, &ys, NormOutliers::AsIs),
            Some(2.0)
        );
        assert_eq!(
            norm_continuous(30.0, &xs, &ys, NormOutliers::AsIs),
            Some(5.0)
        );
        assert_eq!(
            norm_continuous(30.0, &xs, &ys, NormOutliers::AsExtreme),
            Some(3.0)
        );
        assert_eq!(
            norm_continuous(-1.0, &xs, &ys, NormOutliers::AsMissing),
            None
        );
        assert_eq!(denorm_continuous(2.0, &xs, &ys), Some(15.0));
    }
}
