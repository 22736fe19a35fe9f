//! The tutorial's wine data layout and model files, shared by `tests/wine.rs` and
//! `benches/wine.rs` (which includes this file by path).

/// The `;`-separated columns of `winequality_red.csv`, named as the PMML files name them.
pub const COLUMNS: [&str; 12] = [
    "fixed acidity",
    "volatile acidity",
    "citric acid",
    "residual sugar",
    "chlorides",
    "free sulfur dioxide",
    "total sulfur dioxide",
    "density",
    "pH",
    "sulphates",
    "alcohol",
    "quality",
];

/// The seven tutorial PMML files (without `.pmml`).
pub const MODELS: [&str; 7] = [
    "winequalityDecisionTreeClassification",
    "winequalityDesisionTreeRegression",
    "winequalityGeneralizedLinearRegressionGamma",
    "winequalityGeneralizedLinearRegressionGaussian",
    "winequalityLinearRegression",
    "winequalityMultilayerPerceptron",
    "winequalityRandonForrestClassification",
];
