"""Cases trained with scikit-learn and exported with sklearn2pmml or nyoka."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from common import (Case, SEED, ds_breast_cancer, ds_diabetes, ds_iris, ds_mixed, ds_wine,
                    sample_rows, strip_timestamp)

warnings.filterwarnings("ignore")

N_BASE = 100  # base rows per case (edge rows are added on top, total capped at 200)


def _s2p(steps_fn, X, y, verify_rows=None):
    """Returns a build(path) that fits a PMMLPipeline and exports it with sklearn2pmml."""
    def build(path):
        from sklearn2pmml import sklearn2pmml
        from sklearn2pmml.pipeline import PMMLPipeline
        pipe = PMMLPipeline(steps_fn())
        if y is None:
            pipe.fit(X)
        else:
            pipe.fit(X, y)
        sklearn2pmml(pipe, path, with_repr=False)
        strip_timestamp(path)
    return build


def _nyoka(steps_fn, X, y, target):
    def build(path):
        from nyoka import skl_to_pmml
        from sklearn.pipeline import Pipeline
        pipe = Pipeline(steps_fn())
        if y is None:
            pipe.fit(X)
        else:
            pipe.fit(X, y)
        skl_to_pmml(pipe, list(X.columns), target, path)
        strip_timestamp(path)
    return build


def cases():
    from sklearn.cluster import KMeans
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import (ExtraTreesClassifier, ExtraTreesRegressor,
                                  GradientBoostingClassifier, GradientBoostingRegressor,
                                  HistGradientBoostingClassifier, RandomForestClassifier,
                                  RandomForestRegressor, VotingClassifier, VotingRegressor)
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Lasso, LinearRegression, LogisticRegression, Ridge
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import (KBinsDiscretizer, MaxAbsScaler, MinMaxScaler,
                                       OneHotEncoder, RobustScaler, StandardScaler)
    from sklearn.svm import SVC, SVR, LinearSVC
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    iris_X, iris_y = ds_iris()
    wine_X, wine_y = ds_wine()
    bc_X, bc_y = ds_breast_cancer()
    db_X, db_y = ds_diabetes()
    mx_X, mx_label, mx_y = ds_mixed()
    mxc_X, mxc_label, mxc_y = ds_mixed(missing=False)

    R = SEED
    out = []

    def add(name, notes, dataset, build, X, src="sklearn2pmml"):
        out.append(Case(name=name, source=src, notes=notes, dataset=dataset, build=build,
                        rows=sample_rows(X, N_BASE)))

    # ---------------- trees & ensembles
    add("s2p_tree_clf_iris", "DecisionTreeClassifier max_depth=3", "iris",
        _s2p(lambda: [("clf", DecisionTreeClassifier(max_depth=3, random_state=R))], iris_X, iris_y), iris_X)
    add("s2p_tree_reg_diabetes", "DecisionTreeRegressor max_depth=4", "diabetes",
        _s2p(lambda: [("reg", DecisionTreeRegressor(max_depth=4, random_state=R))], db_X, db_y), db_X)
    add("s2p_tree_clf_mixed_nan", "DecisionTreeClassifier trained on data with NaN (native missing-value support). sklearn2pmml 0.133 does not export the learned NaN routing (missingValueStrategy=nullPrediction), so JPMML returns null where scikit-learn predicts", "mixed",
        _s2p(lambda: [("ct", ColumnTransformer([("num", "passthrough", ["x1", "x2", "x3", "x4"])])),
                      ("clf", DecisionTreeClassifier(max_depth=4, random_state=R))], mx_X, mx_label), mx_X)
    add("s2p_rf_clf_iris", "RandomForestClassifier 5 trees depth 3", "iris",
        _s2p(lambda: [("clf", RandomForestClassifier(n_estimators=5, max_depth=3, random_state=R))], iris_X, iris_y), iris_X)
    add("s2p_rf_reg_diabetes", "RandomForestRegressor 5 trees depth 3", "diabetes",
        _s2p(lambda: [("reg", RandomForestRegressor(n_estimators=5, max_depth=3, random_state=R))], db_X, db_y), db_X)
    add("s2p_et_clf_wine", "ExtraTreesClassifier 5 trees depth 3", "wine",
        _s2p(lambda: [("clf", ExtraTreesClassifier(n_estimators=5, max_depth=3, random_state=R))], wine_X, wine_y), wine_X)
    add("s2p_et_reg_diabetes", "ExtraTreesRegressor 5 trees depth 3", "diabetes",
        _s2p(lambda: [("reg", ExtraTreesRegressor(n_estimators=5, max_depth=3, random_state=R))], db_X, db_y), db_X)
    add("s2p_gb_clf_binary_bc", "GradientBoostingClassifier binary, 10 trees depth 2", "breast_cancer",
        _s2p(lambda: [("clf", GradientBoostingClassifier(n_estimators=10, max_depth=2, random_state=R))], bc_X, bc_y), bc_X)
    add("s2p_gb_clf_multi_iris", "GradientBoostingClassifier multiclass, 5 rounds depth 2", "iris",
        _s2p(lambda: [("clf", GradientBoostingClassifier(n_estimators=5, max_depth=2, random_state=R))], iris_X, iris_y), iris_X)
    add("s2p_gb_reg_diabetes", "GradientBoostingRegressor 10 trees depth 2", "diabetes",
        _s2p(lambda: [("reg", GradientBoostingRegressor(n_estimators=10, max_depth=2, random_state=R))], db_X, db_y), db_X)
    add("s2p_hgb_clf_mixed", "HistGradientBoostingClassifier with NaN in numeric inputs, 5 iterations", "mixed",
        _s2p(lambda: [("ct", ColumnTransformer([("num", "passthrough", ["x1", "x2", "x3", "x4"])])),
                      ("clf", HistGradientBoostingClassifier(max_iter=5, max_depth=3, random_state=R))], mx_X, mx_label), mx_X)

    # ---------------- linear
    add("s2p_linreg_diabetes", "LinearRegression", "diabetes",
        _s2p(lambda: [("reg", LinearRegression())], db_X, db_y), db_X)
    add("s2p_ridge_diabetes", "Ridge alpha=0.5", "diabetes",
        _s2p(lambda: [("reg", Ridge(alpha=0.5))], db_X, db_y), db_X)
    add("s2p_lasso_diabetes", "Lasso alpha=0.1 (some zero coefficients)", "diabetes",
        _s2p(lambda: [("reg", Lasso(alpha=0.1))], db_X, db_y), db_X)
    add("s2p_logreg_binary_bc", "LogisticRegression binary", "breast_cancer",
        _s2p(lambda: [("sc", StandardScaler()), ("clf", LogisticRegression(max_iter=500))], bc_X, bc_y), bc_X)
    add("s2p_logreg_multinomial_iris", "LogisticRegression multinomial (softmax)", "iris",
        _s2p(lambda: [("clf", LogisticRegression(max_iter=500))], iris_X, iris_y), iris_X)
    add("s2p_logreg_ovr_wine", "OneVsRestClassifier(LogisticRegression) -> per-class logit, simplemax", "wine",
        _s2p(lambda: [("sc", StandardScaler()), ("clf", OneVsRestClassifier(LogisticRegression(max_iter=500)))], wine_X, wine_y), wine_X)

    # ---------------- neural networks
    add("s2p_mlp_clf_relu_iris", "MLPClassifier relu (8,)", "iris",
        _s2p(lambda: [("clf", MLPClassifier(hidden_layer_sizes=(8,), activation="relu", max_iter=300, random_state=R))], iris_X, iris_y), iris_X)
    add("s2p_mlp_clf_tanh_wine", "MLPClassifier tanh (6,4) after StandardScaler", "wine",
        _s2p(lambda: [("sc", StandardScaler()), ("clf", MLPClassifier(hidden_layer_sizes=(6, 4), activation="tanh", max_iter=300, random_state=R))], wine_X, wine_y), wine_X)
    add("s2p_mlp_clf_logistic_bc", "MLPClassifier logistic (5,), binary", "breast_cancer",
        _s2p(lambda: [("sc", StandardScaler()), ("clf", MLPClassifier(hidden_layer_sizes=(5,), activation="logistic", max_iter=300, random_state=R))], bc_X, bc_y), bc_X)
    add("s2p_mlp_reg_identity_diabetes", "MLPRegressor identity (4,)", "diabetes",
        _s2p(lambda: [("reg", MLPRegressor(hidden_layer_sizes=(4,), activation="identity", max_iter=300, random_state=R))], db_X, db_y), db_X)
    add("s2p_mlp_reg_relu_diabetes", "MLPRegressor relu (8,)", "diabetes",
        _s2p(lambda: [("reg", MLPRegressor(hidden_layer_sizes=(8,), activation="relu", max_iter=300, random_state=R, learning_rate_init=0.05))], db_X, db_y), db_X)

    # ---------------- SVM
    add("s2p_svc_linear_iris", "SVC kernel=linear (one-vs-one)", "iris",
        _s2p(lambda: [("clf", SVC(kernel="linear"))], iris_X, iris_y), iris_X)
    add("s2p_svc_poly_iris", "SVC kernel=poly degree=3", "iris",
        _s2p(lambda: [("clf", SVC(kernel="poly", degree=3, gamma=0.5, coef0=1.0))], iris_X, iris_y), iris_X)
    add("s2p_svc_rbf_bc", "SVC kernel=rbf binary, after StandardScaler", "breast_cancer",
        _s2p(lambda: [("sc", StandardScaler()), ("clf", SVC(kernel="rbf", gamma=0.1))], bc_X, bc_y), bc_X)
    add("s2p_svc_sigmoid_iris", "SVC kernel=sigmoid after StandardScaler", "iris",
        _s2p(lambda: [("sc", StandardScaler()), ("clf", SVC(kernel="sigmoid", gamma=0.1, coef0=0.0))], iris_X, iris_y), iris_X)
    add("s2p_svr_rbf_diabetes", "SVR kernel=rbf", "diabetes",
        _s2p(lambda: [("reg", SVR(kernel="rbf", C=50.0, gamma=1.0))], db_X, db_y), db_X)
    add("s2p_linearsvc_bc", "LinearSVC binary after StandardScaler", "breast_cancer",
        _s2p(lambda: [("sc", StandardScaler()), ("clf", LinearSVC(max_iter=5000))], bc_X, bc_y), bc_X)

    # ---------------- NB, clustering, kNN
    add("s2p_gnb_iris", "GaussianNB. Far outliers make every class likelihood underflow to 0: JPMML returns NaN probabilities", "iris",
        _s2p(lambda: [("clf", GaussianNB())], iris_X, iris_y), iris_X)
    add("s2p_kmeans_iris", "KMeans k=3 (center-based clustering, squared euclidean)", "iris",
        _s2p(lambda: [("km", KMeans(n_clusters=3, n_init=3, random_state=R))], iris_X, None), iris_X)
    add("s2p_knn_clf_iris", "KNeighborsClassifier k=5 (NearestNeighborModel)", "iris",
        _s2p(lambda: [("clf", KNeighborsClassifier(n_neighbors=5))], iris_X, iris_y), iris_X)
    add("s2p_knn_reg_diabetes", "KNeighborsRegressor k=3, distance weights, manhattan, trained on the first 150 rows. A query equal to a training instance (distance 0) gives NaN in JPMML where scikit-learn returns that neighbour's target", "diabetes",
        _s2p(lambda: [("reg", KNeighborsRegressor(n_neighbors=3, weights="distance", metric="manhattan"))], db_X.iloc[:150], db_y.iloc[:150]), db_X)

    # ---------------- voting
    add("s2p_voting_hard_iris", "VotingClassifier hard: tree + logreg + GaussianNB", "iris",
        _s2p(lambda: [("clf", VotingClassifier([("dt", DecisionTreeClassifier(max_depth=2, random_state=R)),
                                                 ("lr", LogisticRegression(max_iter=500)),
                                                 ("nb", GaussianNB())], voting="hard"))], iris_X, iris_y), iris_X)
    add("s2p_voting_soft_iris", "VotingClassifier soft with weights: tree + logreg + GaussianNB", "iris",
        _s2p(lambda: [("clf", VotingClassifier([("dt", DecisionTreeClassifier(max_depth=2, random_state=R)),
                                                 ("lr", LogisticRegression(max_iter=500)),
                                                 ("nb", GaussianNB())], voting="soft", weights=[1, 2, 1]))], iris_X, iris_y), iris_X)
    add("s2p_voting_reg_diabetes", "VotingRegressor: linreg + tree + ridge", "diabetes",
        _s2p(lambda: [("reg", VotingRegressor([("lr", LinearRegression()),
                                                ("dt", DecisionTreeRegressor(max_depth=3, random_state=R)),
                                                ("rg", Ridge(alpha=1.0))]))], db_X, db_y), db_X)

    # ---------------- pipelines with preprocessing
    num = ["x1", "x2", "x3", "x4"]
    cat = ["color", "size"]
    add("s2p_pipe_impute_std_logreg_mixed", "SimpleImputer(mean)+StandardScaler on numerics, SimpleImputer(most_frequent)+OneHotEncoder on strings, LogisticRegression", "mixed",
        _s2p(lambda: [("ct", ColumnTransformer([
            ("num", Pipeline([("imp", SimpleImputer(strategy="mean")), ("sc", StandardScaler())]), num),
            ("cat", Pipeline([("imp", SimpleImputer(strategy="most_frequent")), ("oh", OneHotEncoder())]), cat)])),
            ("clf", LogisticRegression(max_iter=500))], mx_X, mx_label), mx_X)
    add("s2p_pipe_onehot_tree_mixed", "OneHotEncoder(handle_unknown=ignore) on strings + passthrough numerics, DecisionTreeClassifier", "mixed(no missing)",
        _s2p(lambda: [("ct", ColumnTransformer([
            ("num", "passthrough", num),
            ("cat", OneHotEncoder(handle_unknown="ignore"), cat)])),
            ("clf", DecisionTreeClassifier(max_depth=4, random_state=R))], mxc_X, mxc_label), mxc_X)
    add("s2p_pipe_impute_median_rf_reg_mixed", "SimpleImputer(median) numerics + SimpleImputer(constant) + OneHotEncoder strings, RandomForestRegressor", "mixed",
        _s2p(lambda: [("ct", ColumnTransformer([
            ("num", SimpleImputer(strategy="median"), num),
            ("cat", Pipeline([("imp", SimpleImputer(strategy="constant", fill_value="missing")), ("oh", OneHotEncoder(handle_unknown="ignore"))]), cat)])),
            ("reg", RandomForestRegressor(n_estimators=4, max_depth=3, random_state=R))], mx_X, mx_y), mx_X)
    add("s2p_pipe_minmax_svc_wine", "MinMaxScaler + SVC rbf", "wine",
        _s2p(lambda: [("sc", MinMaxScaler()), ("clf", SVC(kernel="rbf", gamma=2.0))], wine_X, wine_y), wine_X)
    add("s2p_pipe_maxabs_mlp_reg_mixed", "MaxAbsScaler on numerics + OneHotEncoder, MLPRegressor tanh", "mixed(no missing)",
        _s2p(lambda: [("ct", ColumnTransformer([
            ("num", MaxAbsScaler(), num),
            ("cat", OneHotEncoder(), cat)])),
            ("reg", MLPRegressor(hidden_layer_sizes=(5,), activation="tanh", max_iter=400, random_state=R, learning_rate_init=0.01))], mxc_X, mxc_y), mxc_X)
    add("s2p_pipe_robust_linreg_mixed", "RobustScaler + OneHotEncoder, LinearRegression", "mixed(no missing)",
        _s2p(lambda: [("ct", ColumnTransformer([
            ("num", RobustScaler(), num),
            ("cat", OneHotEncoder(), cat)])),
            ("reg", LinearRegression())], mxc_X, mxc_y), mxc_X)
    add("s2p_pipe_kbins_onehot_logreg_iris", "KBinsDiscretizer(4 bins, onehot-dense, quantile) + LogisticRegression", "iris",
        _s2p(lambda: [("kb", KBinsDiscretizer(n_bins=4, encode="onehot-dense", strategy="quantile")),
                      ("clf", LogisticRegression(max_iter=500))], iris_X, iris_y), iris_X)
    add("s2p_pipe_kbins_ordinal_tree_diabetes", "KBinsDiscretizer(5 bins, ordinal, uniform) + DecisionTreeRegressor", "diabetes",
        _s2p(lambda: [("kb", KBinsDiscretizer(n_bins=5, encode="ordinal", strategy="uniform")),
                      ("reg", DecisionTreeRegressor(max_depth=3, random_state=R))], db_X, db_y), db_X)

    # ---------------- nyoka
    add("nyoka_tree_clf_iris", "DecisionTreeClassifier max_depth=3 (nyoka)", "iris",
        _nyoka(lambda: [("clf", DecisionTreeClassifier(max_depth=3, random_state=R))], iris_X, iris_y, "species"), iris_X, src="nyoka")
    add("nyoka_rf_clf_iris", "RandomForestClassifier 4 trees depth 3 (nyoka)", "iris",
        _nyoka(lambda: [("clf", RandomForestClassifier(n_estimators=4, max_depth=3, random_state=R))], iris_X, iris_y, "species"), iris_X, src="nyoka")
    add("nyoka_gb_reg_diabetes", "GradientBoostingRegressor 5 trees depth 2 (nyoka)", "diabetes",
        _nyoka(lambda: [("reg", GradientBoostingRegressor(n_estimators=5, max_depth=2, random_state=R))], db_X, db_y, "progression"), db_X, src="nyoka")
    add("nyoka_gb_clf_binary_bc", "GradientBoostingClassifier binary 5 trees depth 2 (nyoka)", "breast_cancer",
        _nyoka(lambda: [("clf", GradientBoostingClassifier(n_estimators=5, max_depth=2, random_state=R))], bc_X, bc_y, "diagnosis"), bc_X, src="nyoka")
    add("nyoka_logreg_std_iris", "StandardScaler + LogisticRegression (nyoka)", "iris",
        _nyoka(lambda: [("sc", StandardScaler()), ("clf", LogisticRegression(max_iter=500))], iris_X, iris_y, "species"), iris_X, src="nyoka")
    add("nyoka_linreg_diabetes", "LinearRegression (nyoka)", "diabetes",
        _nyoka(lambda: [("reg", LinearRegression())], db_X, db_y, "progression"), db_X, src="nyoka")
    add("nyoka_mlp_clf_iris", "MLPClassifier relu (6,) (nyoka)", "iris",
        _nyoka(lambda: [("clf", MLPClassifier(hidden_layer_sizes=(6,), max_iter=300, random_state=R))], iris_X, iris_y, "species"), iris_X, src="nyoka")
    add("nyoka_svc_rbf_iris", "SVC rbf (nyoka)", "iris",
        _nyoka(lambda: [("clf", SVC(kernel="rbf", gamma=0.5))], iris_X, iris_y, "species"), iris_X, src="nyoka")
    add("nyoka_svr_linear_diabetes", "SVR linear (nyoka)", "diabetes",
        _nyoka(lambda: [("reg", SVR(kernel="linear", C=10.0))], db_X, db_y, "progression"), db_X, src="nyoka")
    add("nyoka_gnb_iris", "GaussianNB (nyoka)", "iris",
        _nyoka(lambda: [("clf", GaussianNB())], iris_X, iris_y, "species"), iris_X, src="nyoka")
    add("nyoka_kmeans_iris", "KMeans k=3 (nyoka)", "iris",
        _nyoka(lambda: [("km", KMeans(n_clusters=3, n_init=3, random_state=R))], iris_X, None, "cluster"), iris_X, src="nyoka")
    add("nyoka_knn_clf_iris", "KNeighborsClassifier k=3 (nyoka). nyoka declares probability OutputFields, which JPMML rejects for k-NN (TypeCheckException on every row)", "iris",
        _nyoka(lambda: [("clf", KNeighborsClassifier(n_neighbors=3))], iris_X, iris_y, "species"), iris_X, src="nyoka")
    add("nyoka_knn_reg_diabetes", "KNeighborsRegressor k=4 (nyoka)", "diabetes",
        _nyoka(lambda: [("reg", KNeighborsRegressor(n_neighbors=4))], db_X.iloc[:120], db_y.iloc[:120], "progression"), db_X, src="nyoka")
    add("nyoka_minmax_mlp_reg_diabetes", "MinMaxScaler + MLPRegressor tanh (nyoka)", "diabetes",
        _nyoka(lambda: [("sc", MinMaxScaler()), ("reg", MLPRegressor(hidden_layer_sizes=(4,), activation="tanh", max_iter=300, random_state=R, learning_rate_init=0.05))], db_X, db_y, "progression"), db_X, src="nyoka")
    return out
