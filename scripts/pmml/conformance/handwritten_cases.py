"""Hand-written PMML documents for model types and features the sklearn exporters do not produce.

Every document is generated from the templates below (written for this project, PMML 4.4).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from common import SEED, Case

NS = "http://www.dmg.org/PMML-4_4"


def doc(data_fields: str, body: str, transformations: str = "") -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<PMML xmlns="{NS}" version="4.4">
  <Header description="flowstage conformance suite, hand-written"/>
  <DataDictionary>
{data_fields}
  </DataDictionary>
{transformations}
{body}
</PMML>
"""


def df(name, optype, dtype, values=()):
    if not values:
        return f'    <DataField name="{name}" optype="{optype}" dataType="{dtype}"/>'
    vals = "".join(f'<Value value="{v}"/>' for v in values)
    return f'    <DataField name="{name}" optype="{optype}" dataType="{dtype}">{vals}</DataField>'


def writer(text):
    def build(path):
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    return build


# ---------------------------------------------------------------- synthetic inputs

def xrows(n=110, seed=SEED, colors=("red", "green", "blue"), ints=False):
    rng = np.random.default_rng(seed)
    d = {
        "x1": np.round(rng.uniform(-3, 3, n), 3),
        "x2": np.round(rng.uniform(0, 10, n), 3),
        "color": [str(c) for c in rng.choice(list(colors), n)],
    }
    if ints:
        d["n"] = rng.integers(0, 20, n)
    return pd.DataFrame(d)


STD_FIELDS = "\n".join([df("x1", "continuous", "double"), df("x2", "continuous", "double"),
                        df("color", "categorical", "string")])
STD_MINING = """<MiningField name="x1"/><MiningField name="x2"/><MiningField name="color"/>"""


def case(name, notes, text, rows, extra=(), edges=True):
    return Case(name=name, source="hand-written", notes=notes, dataset="synthetic", build=writer(text),
                rows=rows, extra_rows=list(extra), generic_edges=edges)


# ---------------------------------------------------------------- Scorecard

def scorecard_cases():
    out = []
    fields = "\n".join([df("score", "continuous", "double"), df("age", "continuous", "double"),
                        df("income", "continuous", "double"),
                        df("status", "categorical", "string", ("single", "married", "divorced"))])
    for algo, use_complex in (("pointsBelow", False), ("pointsAbove", True)):
        complex_attr = """<Attribute reasonCode="RC_INC3"><SimplePredicate field="income" operator="greaterOrEqual" value="5000"/>
            <ComplexPartialScore><Apply function="*"><Constant dataType="double">0.002</Constant><FieldRef field="income"/></Apply></ComplexPartialScore></Attribute>""" \
            if use_complex else """<Attribute partialScore="25" reasonCode="RC_INC3"><SimplePredicate field="income" operator="greaterOrEqual" value="5000"/></Attribute>"""
        body = f"""  <Scorecard modelName="sc_{algo}" functionName="regression" useReasonCodes="true" reasonCodeAlgorithm="{algo}" initialScore="10" baselineMethod="other">
    <MiningSchema>
      <MiningField name="score" usageType="target"/>
      <MiningField name="age" missingValueReplacement="40"/>
      <MiningField name="income"/>
      <MiningField name="status" invalidValueTreatment="asMissing"/>
    </MiningSchema>
    <Output>
      <OutputField name="final_score" optype="continuous" dataType="double" feature="predictedValue"/>
      <OutputField name="reason1" optype="categorical" dataType="string" feature="reasonCode" rank="1"/>
      <OutputField name="reason2" optype="categorical" dataType="string" feature="reasonCode" rank="2"/>
      <OutputField name="reason3" optype="categorical" dataType="string" feature="reasonCode" rank="3"/>
    </Output>
    <Characteristics>
      <Characteristic name="age_score" reasonCode="RC_AGE" baselineScore="18">
        <Attribute partialScore="5"><SimplePredicate field="age" operator="lessThan" value="25"/></Attribute>
        <Attribute partialScore="15"><CompoundPredicate booleanOperator="and"><SimplePredicate field="age" operator="greaterOrEqual" value="25"/><SimplePredicate field="age" operator="lessThan" value="45"/></CompoundPredicate></Attribute>
        <Attribute partialScore="28"><SimplePredicate field="age" operator="greaterOrEqual" value="45"/></Attribute>
      </Characteristic>
      <Characteristic name="income_score" baselineScore="12">
        <Attribute partialScore="3" reasonCode="RC_INC1"><SimplePredicate field="income" operator="isMissing"/></Attribute>
        <Attribute partialScore="4" reasonCode="RC_INC1"><SimplePredicate field="income" operator="lessThan" value="1500"/></Attribute>
        <Attribute partialScore="11" reasonCode="RC_INC2"><CompoundPredicate booleanOperator="and"><SimplePredicate field="income" operator="greaterOrEqual" value="1500"/><SimplePredicate field="income" operator="lessThan" value="5000"/></CompoundPredicate></Attribute>
        {complex_attr}
      </Characteristic>
      <Characteristic name="status_score" reasonCode="RC_ST" baselineScore="8">
        <Attribute partialScore="6"><SimplePredicate field="status" operator="isMissing"/></Attribute>
        <Attribute partialScore="10"><SimpleSetPredicate field="status" booleanOperator="isIn"><Array n="2" type="string">married divorced</Array></SimpleSetPredicate></Attribute>
        <Attribute partialScore="2"><True/></Attribute>
      </Characteristic>
    </Characteristics>
  </Scorecard>"""
        rng = np.random.default_rng(SEED + 1)
        n = 110
        rows = pd.DataFrame({"age": rng.integers(18, 70, n).astype(float),
                             "income": np.round(rng.uniform(500, 9000, n), 2),
                             "status": [str(s) for s in rng.choice(["single", "married", "divorced"], n)]})
        extra = [{"age": "25", "income": "1500", "status": "single"},
                 {"age": "45", "income": "5000", "status": "married"},
                 {"age": "24.999", "income": "4999.99", "status": "widowed"}]
        out.append(case(f"hw_scorecard_{algo}", f"Scorecard, reasonCodeAlgorithm={algo}, reason codes ranked"
                        + (", ComplexPartialScore" if use_complex else "") + ", missingValueReplacement, invalidValueTreatment=asMissing",
                        doc(fields, body), rows, extra))
    return out


# ---------------------------------------------------------------- RuleSet

def ruleset_cases():
    out = []
    fields = "\n".join([df("risk", "categorical", "string", ("low", "medium", "high")), STD_FIELDS])
    rules = """
        <SimpleRule id="r1" score="high" recordCount="40" nbCorrect="30" confidence="0.75" weight="2.0">
          <CompoundPredicate booleanOperator="and"><SimplePredicate field="x1" operator="greaterThan" value="1"/><SimplePredicate field="x2" operator="greaterThan" value="5"/></CompoundPredicate>
          <ScoreDistribution value="high" recordCount="30"/><ScoreDistribution value="medium" recordCount="8"/><ScoreDistribution value="low" recordCount="2"/>
        </SimpleRule>
        <CompoundRule>
          <SimplePredicate field="color" operator="equal" value="red"/>
          <SimpleRule id="r2" score="medium" recordCount="30" nbCorrect="18" confidence="0.6" weight="1.5">
            <SimplePredicate field="x2" operator="lessOrEqual" value="5"/>
          </SimpleRule>
          <SimpleRule id="r3" score="high" recordCount="20" nbCorrect="9" confidence="0.45" weight="0.7">
            <True/>
          </SimpleRule>
        </CompoundRule>
        <SimpleRule id="r4" score="low" recordCount="50" nbCorrect="35" confidence="0.7" weight="1.0">
          <CompoundPredicate booleanOperator="or"><SimplePredicate field="x1" operator="lessThan" value="-1"/><SimpleSetPredicate field="color" booleanOperator="isIn"><Array n="1" type="string">green</Array></SimpleSetPredicate></CompoundPredicate>
        </SimpleRule>
        <SimpleRule id="r5" score="medium" recordCount="25" nbCorrect="10" confidence="0.4" weight="0.5">
          <CompoundPredicate booleanOperator="xor"><SimplePredicate field="x1" operator="lessOrEqual" value="0"/><SimplePredicate field="x2" operator="lessOrEqual" value="2.5"/></CompoundPredicate>
        </SimpleRule>"""
    for crit in ("firstHit", "weightedSum", "weightedMax"):
        rule_out = '      <OutputField name="rule" optype="categorical" dataType="string" feature="entityId"/>\n' if crit == "firstHit" else ""
        body = f"""  <RuleSetModel modelName="rules_{crit}" functionName="classification">
    <MiningSchema><MiningField name="risk" usageType="target"/>{STD_MINING}</MiningSchema>
    <Output>
      <OutputField name="pred" optype="categorical" dataType="string" feature="predictedValue"/>
      <OutputField name="conf" optype="continuous" dataType="double" feature="confidence"/>
{rule_out}    </Output>
    <RuleSet defaultScore="low" defaultConfidence="0.2">
      <RuleSelectionMethod criterion="{crit}"/>
      {rules}
    </RuleSet>
  </RuleSetModel>"""
        out.append(case(f"hw_ruleset_{crit}", f"RuleSetModel criterion={crit}, CompoundRule, and/or/xor/SimpleSet predicates, default score", doc(fields, body),
                        xrows(seed=SEED + 2), [{"x1": "1", "x2": "5", "color": "red"}, {"x1": "0", "x2": "2.5", "color": "blue"}]))
    return out


# ---------------------------------------------------------------- GeneralRegression

def grm_glm_cases():
    out = []
    links = [("log", 'distribution="poisson"', ""), ("logit", 'distribution="binomial"', ""),
             ("probit", 'distribution="binomial"', ""), ("cloglog", 'distribution="binomial"', ""),
             ("loglog", 'distribution="binomial"', ""), ("power", 'distribution="gamma"', 'linkParameter="-1"'),
             ("identity", 'distribution="normal"', ""), ("oddspower", 'distribution="binomial"', 'linkParameter="0.5"')]
    fields = "\n".join([df("y", "continuous", "double"), STD_FIELDS])
    for link, dist, lp in links:
        scale = 0.1 if link in ("log", "power", "identity") else 0.3
        inter = 2.0 if link == "power" else 0.2
        body = f"""  <GeneralRegressionModel modelName="glm_{link}" modelType="generalizedLinear" functionName="regression" linkFunction="{link}" {lp} {dist}>
    <MiningSchema><MiningField name="y" usageType="target"/><MiningField name="x1"/><MiningField name="x2"/><MiningField name="color"/></MiningSchema>
    <Output><OutputField name="pred" optype="continuous" dataType="double" feature="predictedValue"/></Output>
    <ParameterList>
      <Parameter name="p0" label="Intercept"/><Parameter name="p1" label="x1"/><Parameter name="p2" label="x2"/>
      <Parameter name="p3" label="color=red"/><Parameter name="p4" label="color=green"/><Parameter name="p5" label="x1*x2"/><Parameter name="p6" label="x1^2"/>
    </ParameterList>
    <FactorList><Predictor name="color"/></FactorList>
    <CovariateList><Predictor name="x1"/><Predictor name="x2"/></CovariateList>
    <PPMatrix>
      <PPCell value="1" predictorName="x1" parameterName="p1"/>
      <PPCell value="1" predictorName="x2" parameterName="p2"/>
      <PPCell value="red" predictorName="color" parameterName="p3"/>
      <PPCell value="green" predictorName="color" parameterName="p4"/>
      <PPCell value="1" predictorName="x1" parameterName="p5"/><PPCell value="1" predictorName="x2" parameterName="p5"/>
      <PPCell value="2" predictorName="x1" parameterName="p6"/>
    </PPMatrix>
    <ParamMatrix>
      <PCell parameterName="p0" beta="{inter}"/>
      <PCell parameterName="p1" beta="{scale}"/>
      <PCell parameterName="p2" beta="{scale / 2}"/>
      <PCell parameterName="p3" beta="-0.25"/>
      <PCell parameterName="p4" beta="0.15"/>
      <PCell parameterName="p5" beta="0.01"/>
      <PCell parameterName="p6" beta="-0.02"/>
    </ParamMatrix>
  </GeneralRegressionModel>"""
        if link == "power":
            body = body.replace('beta="-0.02"', 'beta="0.001"')
        out.append(case(f"hw_grm_glm_{link}", f"GeneralRegressionModel generalizedLinear linkFunction={link} {lp} {dist}; factor + covariates, interaction and power terms in PPMatrix",
                        doc(fields, body), xrows(seed=SEED + 3)))
    # generalLinear regression with offset
    body = """  <GeneralRegressionModel modelName="gl_offset" modelType="generalLinear" functionName="regression" offsetValue="1.5">
    <MiningSchema><MiningField name="y" usageType="target"/><MiningField name="x1"/><MiningField name="x2"/><MiningField name="color"/></MiningSchema>
    <ParameterList><Parameter name="p0"/><Parameter name="p1"/><Parameter name="p2"/><Parameter name="p3"/></ParameterList>
    <FactorList><Predictor name="color"/></FactorList>
    <CovariateList><Predictor name="x1"/><Predictor name="x2"/></CovariateList>
    <PPMatrix><PPCell value="1" predictorName="x1" parameterName="p1"/><PPCell value="3" predictorName="x2" parameterName="p2"/><PPCell value="blue" predictorName="color" parameterName="p3"/></PPMatrix>
    <ParamMatrix><PCell parameterName="p0" beta="3.25"/><PCell parameterName="p1" beta="-1.5"/><PCell parameterName="p2" beta="0.004"/><PCell parameterName="p3" beta="0.75"/></ParamMatrix>
  </GeneralRegressionModel>"""
    out.append(case("hw_grm_general_linear_offset", "GeneralRegressionModel generalLinear with offsetValue, cubic covariate term",
                    doc(fields, body), xrows(seed=SEED + 4)))
    # multinomialLogistic & ordinalMultinomial
    cfields = "\n".join([df("grade", "ordinal", "string", ("low", "mid", "high")), STD_FIELDS])
    common = """<ParameterList><Parameter name="p0"/><Parameter name="p1"/><Parameter name="p2"/><Parameter name="p3"/></ParameterList>
    <FactorList><Predictor name="color"/></FactorList>
    <CovariateList><Predictor name="x1"/><Predictor name="x2"/></CovariateList>
    <PPMatrix><PPCell value="1" predictorName="x1" parameterName="p1"/><PPCell value="1" predictorName="x2" parameterName="p2"/><PPCell value="red" predictorName="color" parameterName="p3"/></PPMatrix>"""
    outputs = """<Output><OutputField name="pred" optype="categorical" dataType="string" feature="predictedValue"/>
      <OutputField name="p_low" optype="continuous" dataType="double" feature="probability" value="low"/>
      <OutputField name="p_mid" optype="continuous" dataType="double" feature="probability" value="mid"/>
      <OutputField name="p_high" optype="continuous" dataType="double" feature="probability" value="high"/></Output>"""
    for link in ("logit", "probit", "cloglog"):
        body = f"""  <GeneralRegressionModel modelName="ord_{link}" modelType="ordinalMultinomial" functionName="classification" cumulativeLink="{link}">
    <MiningSchema><MiningField name="grade" usageType="target"/><MiningField name="x1"/><MiningField name="x2"/><MiningField name="color"/></MiningSchema>
    {outputs}
    {common}
    <ParamMatrix>
      <PCell targetCategory="low" parameterName="p0" beta="-0.5"/>
      <PCell targetCategory="mid" parameterName="p0" beta="1.2"/>
      <PCell parameterName="p1" beta="0.8"/>
      <PCell parameterName="p2" beta="-0.15"/>
      <PCell parameterName="p3" beta="0.4"/>
    </ParamMatrix>
  </GeneralRegressionModel>"""
        out.append(case(f"hw_grm_ordinal_{link}", f"GeneralRegressionModel ordinalMultinomial cumulativeLink={link}",
                        doc(cfields, body), xrows(seed=SEED + 5)))
    body = f"""  <GeneralRegressionModel modelName="multinom" modelType="multinomialLogistic" functionName="classification">
    <MiningSchema><MiningField name="grade" usageType="target"/><MiningField name="x1"/><MiningField name="x2"/><MiningField name="color"/></MiningSchema>
    {outputs}
    {common}
    <ParamMatrix>
      <PCell targetCategory="low" parameterName="p0" beta="0.5"/>
      <PCell targetCategory="low" parameterName="p1" beta="-0.9"/>
      <PCell targetCategory="low" parameterName="p2" beta="0.05"/>
      <PCell targetCategory="low" parameterName="p3" beta="0.3"/>
      <PCell targetCategory="mid" parameterName="p0" beta="0.2"/>
      <PCell targetCategory="mid" parameterName="p1" beta="-0.2"/>
      <PCell targetCategory="mid" parameterName="p3" beta="-0.6"/>
    </ParamMatrix>
  </GeneralRegressionModel>"""
    out.append(case("hw_grm_multinomial_logistic", "GeneralRegressionModel multinomialLogistic, reference category 'high'",
                    doc(cfields, body), xrows(seed=SEED + 6)))
    return out


# ---------------------------------------------------------------- NaiveBayes

def naive_bayes_cases():
    fields = "\n".join([df("cls", "categorical", "string", ("A", "B")),
                        df("color", "categorical", "string", ("red", "green", "blue")),
                        df("shape", "categorical", "string", ("round", "square")),
                        df("x1", "continuous", "double")])
    body = """  <NaiveBayesModel modelName="nb_mixed" functionName="classification" threshold="0.001">
    <MiningSchema><MiningField name="cls" usageType="target"/><MiningField name="color"/><MiningField name="shape"/><MiningField name="x1"/></MiningSchema>
    <Output>
      <OutputField name="pred" optype="categorical" dataType="string" feature="predictedValue"/>
      <OutputField name="pA" optype="continuous" dataType="double" feature="probability" value="A"/>
      <OutputField name="pB" optype="continuous" dataType="double" feature="probability" value="B"/>
    </Output>
    <BayesInputs>
      <BayesInput fieldName="color">
        <PairCounts value="red"><TargetValueCounts><TargetValueCount value="A" count="30"/><TargetValueCount value="B" count="10"/></TargetValueCounts></PairCounts>
        <PairCounts value="green"><TargetValueCounts><TargetValueCount value="A" count="0"/><TargetValueCount value="B" count="25"/></TargetValueCounts></PairCounts>
        <PairCounts value="blue"><TargetValueCounts><TargetValueCount value="A" count="20"/><TargetValueCount value="B" count="15"/></TargetValueCounts></PairCounts>
      </BayesInput>
      <BayesInput fieldName="shape">
        <PairCounts value="round"><TargetValueCounts><TargetValueCount value="A" count="35"/><TargetValueCount value="B" count="12"/></TargetValueCounts></PairCounts>
        <PairCounts value="square"><TargetValueCounts><TargetValueCount value="A" count="15"/><TargetValueCount value="B" count="38"/></TargetValueCounts></PairCounts>
      </BayesInput>
      <BayesInput fieldName="x1">
        <TargetValueStats>
          <TargetValueStat value="A"><GaussianDistribution mean="-0.5" variance="1.2"/></TargetValueStat>
          <TargetValueStat value="B"><GaussianDistribution mean="0.8" variance="0.7"/></TargetValueStat>
        </TargetValueStats>
      </BayesInput>
    </BayesInputs>
    <BayesOutput fieldName="cls"><TargetValueCounts><TargetValueCount value="A" count="50"/><TargetValueCount value="B" count="50"/></TargetValueCounts></BayesOutput>
  </NaiveBayesModel>"""
    rng = np.random.default_rng(SEED + 7)
    n = 110
    rows = pd.DataFrame({"color": [str(c) for c in rng.choice(["red", "green", "blue"], n)],
                         "shape": [str(c) for c in rng.choice(["round", "square"], n)],
                         "x1": np.round(rng.normal(0, 1.5, n), 3)})
    # discretized continuous input too
    fields2 = "\n".join([df("cls", "categorical", "string", ("A", "B")), df("x2", "continuous", "double"),
                         df("color", "categorical", "string", ("red", "green", "blue"))])
    body2 = """  <NaiveBayesModel modelName="nb_discretize" functionName="classification" threshold="0.01">
    <MiningSchema><MiningField name="cls" usageType="target"/><MiningField name="x2"/><MiningField name="color"/></MiningSchema>
    <Output>
      <OutputField name="pA" optype="continuous" dataType="double" feature="probability" value="A"/>
      <OutputField name="pB" optype="continuous" dataType="double" feature="probability" value="B"/>
    </Output>
    <BayesInputs>
      <BayesInput fieldName="x2">
        <DerivedField optype="categorical" dataType="string">
          <Discretize field="x2">
            <DiscretizeBin binValue="lo"><Interval closure="openOpen" rightMargin="3"/></DiscretizeBin>
            <DiscretizeBin binValue="mid"><Interval closure="closedOpen" leftMargin="3" rightMargin="7"/></DiscretizeBin>
            <DiscretizeBin binValue="hi"><Interval closure="closedOpen" leftMargin="7"/></DiscretizeBin>
          </Discretize>
        </DerivedField>
        <PairCounts value="lo"><TargetValueCounts><TargetValueCount value="A" count="20"/><TargetValueCount value="B" count="5"/></TargetValueCounts></PairCounts>
        <PairCounts value="mid"><TargetValueCounts><TargetValueCount value="A" count="20"/><TargetValueCount value="B" count="20"/></TargetValueCounts></PairCounts>
        <PairCounts value="hi"><TargetValueCounts><TargetValueCount value="A" count="5"/><TargetValueCount value="B" count="30"/></TargetValueCounts></PairCounts>
      </BayesInput>
      <BayesInput fieldName="color">
        <PairCounts value="red"><TargetValueCounts><TargetValueCount value="A" count="25"/><TargetValueCount value="B" count="10"/></TargetValueCounts></PairCounts>
        <PairCounts value="green"><TargetValueCounts><TargetValueCount value="A" count="10"/><TargetValueCount value="B" count="25"/></TargetValueCounts></PairCounts>
        <PairCounts value="blue"><TargetValueCounts><TargetValueCount value="A" count="10"/><TargetValueCount value="B" count="20"/></TargetValueCounts></PairCounts>
      </BayesInput>
    </BayesInputs>
    <BayesOutput fieldName="cls"><TargetValueCounts><TargetValueCount value="A" count="45"/><TargetValueCount value="B" count="55"/></TargetValueCounts></BayesOutput>
  </NaiveBayesModel>"""
    return [case("hw_naive_bayes_categorical", "NaiveBayesModel with categorical PairCounts (a zero count -> threshold) and a GaussianDistribution input", doc(fields, body), rows),
            case("hw_naive_bayes_discretized", "NaiveBayesModel with a continuous input discretized by a DerivedField inside BayesInput", doc(fields2, body2), xrows(seed=SEED + 8),
                 [{"x2": "3", "color": "red"}, {"x2": "7", "color": "blue"}])]


# ---------------------------------------------------------------- TreeModel strategies

def sd(a, b, c, conf=None):
    cf = conf or (round(a / (a + b + c), 4), round(b / (a + b + c), 4), round(c / (a + b + c), 4))
    return (f'<ScoreDistribution value="A" recordCount="{a}" confidence="{cf[0]}"/>'
            f'<ScoreDistribution value="B" recordCount="{b}" confidence="{cf[1]}"/>'
            f'<ScoreDistribution value="C" recordCount="{c}" confidence="{cf[2]}"/>')


def tree_classification(mvs, ntc):
    return f"""  <TreeModel modelName="tree_{mvs}" functionName="classification" missingValueStrategy="{mvs}" missingValuePenalty="0.8" noTrueChildStrategy="{ntc}" splitCharacteristic="multiSplit">
    <MiningSchema><MiningField name="cls" usageType="target"/>{STD_MINING}</MiningSchema>
    <Output>
      <OutputField name="pred" optype="categorical" dataType="string" feature="predictedValue"/>
      <OutputField name="pA" optype="continuous" dataType="double" feature="probability" value="A"/>
      <OutputField name="pB" optype="continuous" dataType="double" feature="probability" value="B"/>
      <OutputField name="pC" optype="continuous" dataType="double" feature="probability" value="C"/>
      <OutputField name="conf" optype="continuous" dataType="double" feature="confidence"/>
      <OutputField name="node" optype="categorical" dataType="string" feature="entityId"/>
    </Output>
    <Node id="root" score="A" recordCount="100" defaultChild="n1">
      <True/>
      {sd(50, 30, 20)}
      <Node id="n1" score="A" recordCount="60" defaultChild="n12">
        <SimplePredicate field="x1" operator="lessThan" value="0.5"/>
        {sd(35, 20, 5)}
        <Node id="n11" score="B" recordCount="25">
          <CompoundPredicate booleanOperator="and"><SimplePredicate field="x2" operator="lessOrEqual" value="4"/><SimplePredicate field="x1" operator="greaterThan" value="-2.5"/></CompoundPredicate>
          {sd(8, 15, 2)}
        </Node>
        <Node id="n12" score="A" recordCount="30">
          <CompoundPredicate booleanOperator="or"><SimplePredicate field="x2" operator="greaterThan" value="4"/><SimplePredicate field="color" operator="equal" value="red"/></CompoundPredicate>
          {sd(25, 4, 1)}
        </Node>
      </Node>
      <Node id="n2" score="C" recordCount="40" defaultChild="n21">
        <CompoundPredicate booleanOperator="surrogate"><SimplePredicate field="x1" operator="greaterOrEqual" value="0.5"/><SimplePredicate field="x2" operator="greaterThan" value="6"/><False/></CompoundPredicate>
        {sd(15, 10, 15)}
        <Node id="n21" score="C" recordCount="25">
          <SimpleSetPredicate field="color" booleanOperator="isIn"><Array n="2" type="string">red blue</Array></SimpleSetPredicate>
          {sd(5, 5, 15)}
          <Node id="n211" score="C" recordCount="12"><SimplePredicate field="x2" operator="lessThan" value="8"/>{sd(1, 2, 9)}</Node>
          <Node id="n212" score="A" recordCount="13"><SimplePredicate field="x2" operator="greaterOrEqual" value="8"/>{sd(7, 3, 3)}</Node>
        </Node>
        <Node id="n22" score="B" recordCount="15">
          <CompoundPredicate booleanOperator="xor"><SimplePredicate field="color" operator="equal" value="green"/><SimplePredicate field="x2" operator="isMissing"/></CompoundPredicate>
          {sd(10, 5, 0)}
        </Node>
      </Node>
    </Node>
  </TreeModel>"""


def tree_cases():
    fields = "\n".join([df("cls", "categorical", "string", ("A", "B", "C")), STD_FIELDS])
    extra = [{"x1": "0.5", "x2": "4", "color": "red"}, {"x1": None, "x2": "4", "color": "green"},
             {"x1": None, "x2": None, "color": "blue"}, {"x1": "1", "x2": "8", "color": None},
             {"x1": "2", "x2": "3", "color": "yellow"}, {"x1": "-2.5", "x2": "4", "color": "green"},
             {"x1": None, "x2": "7", "color": "red"}, {"x1": "-3", "x2": None, "color": "green"}]
    out = []
    combos = [("none", "returnNullPrediction"), ("lastPrediction", "returnLastPrediction"),
              ("nullPrediction", "returnLastPrediction"), ("defaultChild", "returnNullPrediction"),
              ("weightedConfidence", "returnLastPrediction"), ("aggregateNodes", "returnNullPrediction")]
    for mvs, ntc in combos:
        note = (" (JPMML 1.7 does not support %s: rows that reach a split on a missing value are UnsupportedAttributeException errors)" % mvs
                if mvs in ("aggregateNodes", "weightedConfidence") else "")
        out.append(case(f"hw_tree_mvs_{mvs}", f"TreeModel classification missingValueStrategy={mvs}, noTrueChildStrategy={ntc}, missingValuePenalty=0.8; surrogate/and/or/xor/isIn predicates; entityId + confidence outputs" + note,
                        doc(fields, tree_classification(mvs, ntc)), xrows(seed=SEED + 9, colors=("red", "green", "blue", "yellow")), extra))
    # regression tree, binary split characteristic, integer field
    rfields = "\n".join([df("y", "continuous", "double"), STD_FIELDS, df("n", "continuous", "integer")])
    body = f"""  <TreeModel modelName="rtree" functionName="regression" missingValueStrategy="lastPrediction" noTrueChildStrategy="returnLastPrediction" splitCharacteristic="binarySplit">
    <MiningSchema><MiningField name="y" usageType="target"/>{STD_MINING}<MiningField name="n"/></MiningSchema>
    <Output><OutputField name="node" optype="categorical" dataType="string" feature="entityId"/></Output>
    <Node id="0" score="10.5">
      <True/>
      <Node id="1" score="4.25"><SimplePredicate field="n" operator="lessOrEqual" value="7"/>
        <Node id="3" score="2.125"><SimplePredicate field="x1" operator="lessThan" value="-1.25"/></Node>
        <Node id="4" score="5.5"><SimplePredicate field="x1" operator="greaterOrEqual" value="-1.25"/></Node>
      </Node>
      <Node id="2" score="15.75"><SimplePredicate field="n" operator="greaterThan" value="7"/>
        <Node id="5" score="12"><SimplePredicate field="color" operator="notEqual" value="blue"/></Node>
        <Node id="6" score="22.5"><SimplePredicate field="x2" operator="greaterThan" value="5"/></Node>
      </Node>
    </Node>
  </TreeModel>"""
    out.append(case("hw_tree_regression_last_prediction", "TreeModel regression, lastPrediction / returnLastPrediction, integer field, notEqual",
                    doc(rfields, body), xrows(seed=SEED + 10, ints=True),
                    [{"x1": "-1.25", "x2": "5", "color": "blue", "n": "7"}, {"x1": "1", "x2": "4", "color": "blue", "n": "8"}]))
    return out


# ---------------------------------------------------------------- MiningModel

def reg_segment(sid, pred, weight, intercept, terms, extra=""):
    nps = "".join(f'<NumericPredictor name="{f}" coefficient="{c}"/>' for f, c in terms)
    return f"""      <Segment id="{sid}" weight="{weight}">{pred}
        <RegressionModel functionName="regression">
          <MiningSchema><MiningField name="y" usageType="target"/>{STD_MINING}</MiningSchema>
          <RegressionTable intercept="{intercept}">{nps}{extra}</RegressionTable>
        </RegressionModel>
      </Segment>"""


def cls_segment(sid, pred, weight, coefs):
    tables = "".join(
        f'<RegressionTable intercept="{i}" targetCategory="{cat}"><NumericPredictor name="x1" coefficient="{a}"/><NumericPredictor name="x2" coefficient="{b}"/></RegressionTable>'
        for cat, (i, a, b) in coefs)
    return f"""      <Segment id="{sid}" weight="{weight}">{pred}
        <RegressionModel functionName="classification" normalizationMethod="softmax">
          <MiningSchema><MiningField name="cls" usageType="target"/><MiningField name="x1"/><MiningField name="x2"/></MiningSchema>
          <Output><OutputField name="pA_{sid}" optype="continuous" dataType="double" feature="probability" value="A"/></Output>
          {tables}
        </RegressionModel>
      </Segment>"""


def mining_cases():
    out = []
    rfields = "\n".join([df("y", "continuous", "double"), STD_FIELDS])
    segs = "\n".join([
        reg_segment("s1", "<True/>", 1.0, 1.0, [("x1", 2.0)]),
        reg_segment("s2", '<SimplePredicate field="x2" operator="greaterThan" value="3"/>', 2.0, -1.0, [("x2", 0.5)]),
        reg_segment("s3", '<SimplePredicate field="color" operator="notEqual" value="green"/>', 0.5, 0.25, [("x1", -1.0), ("x2", 0.1)],
                    '<CategoricalPredictor name="color" value="red" coefficient="1.5"/>'),
        reg_segment("s4", "<True/>", 3.0, 0.5, [("x2", -0.3)]),
    ])
    for m in ("average", "weightedAverage", "median", "weightedMedian", "sum", "weightedSum", "selectFirst"):
        body = f"""  <MiningModel modelName="mm_{m}" functionName="regression">
    <MiningSchema><MiningField name="y" usageType="target"/>{STD_MINING}</MiningSchema>
    <Segmentation multipleModelMethod="{m}">
{segs}
    </Segmentation>
  </MiningModel>"""
        out.append(case(f"hw_mining_reg_{m}", f"MiningModel regression multipleModelMethod={m}; 4 RegressionModel segments with weights and segment predicates",
                        doc(rfields, body), xrows(seed=SEED + 11), [{"x1": "1", "x2": "3", "color": "green"}]))
    cfields = "\n".join([df("cls", "categorical", "string", ("A", "B", "C")), STD_FIELDS])
    csegs = "\n".join([
        cls_segment("c1", "<True/>", 1.0, [("A", (0.5, 1.0, -0.1)), ("B", (0.2, -0.5, 0.2)), ("C", (0.0, 0.0, 0.0))]),
        cls_segment("c2", '<SimplePredicate field="color" operator="equal" value="red"/>', 2.5, [("A", (-0.5, 0.3, 0.1)), ("B", (1.0, 0.2, -0.3)), ("C", (0.0, 0.0, 0.0))]),
        cls_segment("c3", "<True/>", 1.5, [("A", (0.1, -0.8, 0.05)), ("B", (-0.2, 0.1, 0.15)), ("C", (0.0, 0.0, 0.0))]),
    ])
    for m in ("majorityVote", "weightedMajorityVote", "average", "weightedAverage", "max", "median"):
        body = f"""  <MiningModel modelName="mmc_{m}" functionName="classification">
    <MiningSchema><MiningField name="cls" usageType="target"/>{STD_MINING}</MiningSchema>
    <Output>
      <OutputField name="pred" optype="categorical" dataType="string" feature="predictedValue"/>
      <OutputField name="pA" optype="continuous" dataType="double" feature="probability" value="A"/>
      <OutputField name="pB" optype="continuous" dataType="double" feature="probability" value="B"/>
      <OutputField name="pC" optype="continuous" dataType="double" feature="probability" value="C"/>
    </Output>
    <Segmentation multipleModelMethod="{m}">
{csegs}
    </Segmentation>
  </MiningModel>"""
        out.append(case(f"hw_mining_cls_{m}", f"MiningModel classification multipleModelMethod={m}; 3 softmax RegressionModel segments, one with a predicate",
                        doc(cfields, body), xrows(seed=SEED + 12)))
    # selectAll (JPMML: returns every segment's result)
    # modelChain: the first segment's output feeds the second
    body = f"""  <MiningModel modelName="chain" functionName="classification">
    <MiningSchema><MiningField name="cls" usageType="target"/>{STD_MINING}</MiningSchema>
    <Output>
      <OutputField name="pA" optype="continuous" dataType="double" feature="probability" value="A"/>
      <OutputField name="pB" optype="continuous" dataType="double" feature="probability" value="B"/>
    </Output>
    <Segmentation multipleModelMethod="modelChain">
      <Segment id="1"><True/>
        <RegressionModel functionName="regression">
          <MiningSchema>{STD_MINING}</MiningSchema>
          <Output><OutputField name="stage1" optype="continuous" dataType="double" feature="predictedValue"/>
                  <OutputField name="stage1_sq" optype="continuous" dataType="double" feature="transformedValue"><Apply function="pow"><FieldRef field="stage1"/><Constant dataType="double">2</Constant></Apply></OutputField></Output>
          <RegressionTable intercept="0.3"><NumericPredictor name="x1" coefficient="0.7"/><NumericPredictor name="x2" coefficient="-0.2"/><CategoricalPredictor name="color" value="blue" coefficient="0.9"/></RegressionTable>
        </RegressionModel>
      </Segment>
      <Segment id="2"><True/>
        <RegressionModel functionName="classification" normalizationMethod="logit">
          <MiningSchema><MiningField name="cls" usageType="target"/><MiningField name="stage1"/><MiningField name="stage1_sq"/></MiningSchema>
          <RegressionTable intercept="-0.4" targetCategory="A"><NumericPredictor name="stage1" coefficient="1.3"/><NumericPredictor name="stage1_sq" coefficient="-0.1"/></RegressionTable>
          <RegressionTable intercept="0" targetCategory="B"/>
        </RegressionModel>
      </Segment>
    </Segmentation>
  </MiningModel>"""
    bfields = "\n".join([df("cls", "categorical", "string", ("A", "B")), STD_FIELDS])
    out.append(case("hw_mining_model_chain", "MiningModel modelChain: regression segment output (predictedValue + transformedValue) feeds a logit classification segment",
                    doc(bfields, body), xrows(seed=SEED + 13)))
    return out


# ---------------------------------------------------------------- RegressionModel normalisations & Targets

def regression_norm_cases():
    out = []
    bfields = "\n".join([df("cls", "categorical", "string", ("yes", "no")), STD_FIELDS])
    for m in ("logit", "probit", "cloglog", "loglog", "cauchit", "none"):
        body = f"""  <RegressionModel modelName="bin_{m}" functionName="classification" normalizationMethod="{m}">
    <MiningSchema><MiningField name="cls" usageType="target"/>{STD_MINING}</MiningSchema>
    <Output>
      <OutputField name="pred" optype="categorical" dataType="string" feature="predictedValue"/>
      <OutputField name="p_yes" optype="continuous" dataType="double" feature="probability" value="yes"/>
      <OutputField name="p_no" optype="continuous" dataType="double" feature="probability" value="no"/>
    </Output>
    <RegressionTable intercept="{0.2 if m not in ('exp', 'none') else 0.1}" targetCategory="yes">
      <NumericPredictor name="x1" coefficient="{0.6 if m not in ('exp', 'none') else 0.05}"/>
      <NumericPredictor name="x2" exponent="2" coefficient="{-0.02 if m not in ('exp', 'none') else 0.002}"/>
      <CategoricalPredictor name="color" value="red" coefficient="{0.4 if m not in ('exp', 'none') else 0.1}"/>
      <PredictorTerm coefficient="0.05"><FieldRef field="x1"/><FieldRef field="x2"/></PredictorTerm>
    </RegressionTable>
    <RegressionTable intercept="0" targetCategory="no"/>
  </RegressionModel>"""
        out.append(case(f"hw_regression_binary_{m}", f"RegressionModel binary classification normalizationMethod={m}; exponent, CategoricalPredictor, PredictorTerm",
                        doc(bfields, body), xrows(seed=SEED + 14)))
    cfields = "\n".join([df("cls", "categorical", "string", ("A", "B", "C")), STD_FIELDS])
    for m in ("softmax", "simplemax"):
        body = f"""  <RegressionModel modelName="multi_{m}" functionName="classification" normalizationMethod="{m}">
    <MiningSchema><MiningField name="cls" usageType="target"/>{STD_MINING}</MiningSchema>
    <Output>
      <OutputField name="pA" optype="continuous" dataType="double" feature="probability" value="A"/>
      <OutputField name="pB" optype="continuous" dataType="double" feature="probability" value="B"/>
      <OutputField name="pC" optype="continuous" dataType="double" feature="probability" value="C"/>
    </Output>
    <RegressionTable intercept="{1.0 if m == 'simplemax' else 0.3}" targetCategory="A"><NumericPredictor name="x1" coefficient="{0.2 if m == 'simplemax' else 0.9}"/><NumericPredictor name="x2" coefficient="0.05"/></RegressionTable>
    <RegressionTable intercept="{2.0 if m == 'simplemax' else -0.2}" targetCategory="B"><NumericPredictor name="x2" coefficient="{0.1 if m == 'simplemax' else -0.3}"/><CategoricalPredictor name="color" value="green" coefficient="0.5"/></RegressionTable>
    <RegressionTable intercept="1.5" targetCategory="C"/>
  </RegressionModel>"""
        out.append(case(f"hw_regression_multi_{m}", f"RegressionModel 3-class classification normalizationMethod={m}",
                        doc(cfields, body), xrows(seed=SEED + 15)))
    rfields = "\n".join([df("y", "continuous", "double"), STD_FIELDS])
    for m in ("exp", "softmax", "logit"):
        body = f"""  <RegressionModel modelName="reg_{m}" functionName="regression" normalizationMethod="{m}">
    <MiningSchema><MiningField name="y" usageType="target"/>{STD_MINING}</MiningSchema>
    <RegressionTable intercept="0.3"><NumericPredictor name="x1" coefficient="0.45"/><NumericPredictor name="x2" coefficient="-0.12"/><CategoricalPredictor name="color" value="green" coefficient="0.6"/></RegressionTable>
  </RegressionModel>"""
        out.append(case(f"hw_regression_reg_{m}", f"RegressionModel regression with normalizationMethod={m}", doc(rfields, body), xrows(seed=SEED + 23)))
    # Targets
    rfields = "\n".join([df("y", "continuous", "double"), STD_FIELDS])
    for name, targ, note in (
            ("round", '<Target field="y" rescaleFactor="2.5" rescaleConstant="-3" castInteger="round" min="-10" max="20"/>', "rescaleFactor, rescaleConstant, castInteger=round, min/max clamp"),
            ("floor_ceiling", '<Target field="y" rescaleFactor="0.5" rescaleConstant="1.25" castInteger="ceiling" min="-2"/>', "castInteger=ceiling, min only"),
            ("default_value", '<Target field="y" rescaleFactor="10" castInteger="floor" max="35"><TargetValue defaultValue="7"/></Target>', "castInteger=floor, max only, TargetValue defaultValue used when inputs are missing")):
        body = f"""  <RegressionModel modelName="targets_{name}" functionName="regression">
    <MiningSchema><MiningField name="y" usageType="target"/>{STD_MINING}</MiningSchema>
    <Output>
      <OutputField name="pred" optype="continuous" dataType="double" feature="predictedValue"/>
      <OutputField name="pred_int" optype="continuous" dataType="integer" feature="predictedValue"/>
    </Output>
    <Targets>{targ}</Targets>
    <RegressionTable intercept="1.1"><NumericPredictor name="x1" coefficient="1.7"/><NumericPredictor name="x2" coefficient="0.33"/><CategoricalPredictor name="color" value="blue" coefficient="-2.2"/></RegressionTable>
  </RegressionModel>"""
        out.append(case(f"hw_targets_{name}", f"RegressionModel with Targets: {note}", doc(rfields, body), xrows(seed=SEED + 16)))
    return out


# ---------------------------------------------------------------- transformations

def transform_cases():
    out = []
    fields = "\n".join([df("y", "continuous", "double"), STD_FIELDS, df("n", "continuous", "integer"),
                        df("code", "categorical", "string")])
    tdict = """  <TransformationDictionary>
    <DefineFunction name="scale_shift" optype="continuous" dataType="double">
      <ParameterField name="v" dataType="double"/><ParameterField name="k" dataType="double"/>
      <Apply function="+"><Apply function="*"><FieldRef field="v"/><FieldRef field="k"/></Apply><Constant dataType="double">0.5</Constant></Apply>
    </DefineFunction>
    <DefineFunction name="clip01" optype="continuous" dataType="double">
      <ParameterField name="v" dataType="double"/>
      <Apply function="max"><Constant dataType="double">0</Constant><Apply function="min"><FieldRef field="v"/><Constant dataType="double">1</Constant></Apply></Apply>
    </DefineFunction>
    <DerivedField name="nc_asis" optype="continuous" dataType="double">
      <NormContinuous field="x1" outliers="asIs"><LinearNorm orig="-2" norm="0"/><LinearNorm orig="0" norm="0.4"/><LinearNorm orig="2" norm="1"/></NormContinuous>
    </DerivedField>
    <DerivedField name="nc_missing" optype="continuous" dataType="double">
      <NormContinuous field="x1" outliers="asMissingValues" mapMissingTo="-1"><LinearNorm orig="-2" norm="0"/><LinearNorm orig="2" norm="1"/></NormContinuous>
    </DerivedField>
    <DerivedField name="nc_extreme" optype="continuous" dataType="double">
      <NormContinuous field="x2" outliers="asExtremeValues"><LinearNorm orig="1" norm="-1"/><LinearNorm orig="5" norm="0"/><LinearNorm orig="9" norm="2"/></NormContinuous>
    </DerivedField>
    <DerivedField name="nd_red" optype="continuous" dataType="double">
      <NormDiscrete field="color" value="red" mapMissingTo="0.5"/>
    </DerivedField>
    <DerivedField name="disc_x2" optype="categorical" dataType="string">
      <Discretize field="x2" mapMissingTo="missing" defaultValue="other">
        <DiscretizeBin binValue="low"><Interval closure="closedOpen" leftMargin="0" rightMargin="2.5"/></DiscretizeBin>
        <DiscretizeBin binValue="mid"><Interval closure="closedClosed" leftMargin="2.5" rightMargin="6"/></DiscretizeBin>
        <DiscretizeBin binValue="high"><Interval closure="openOpen" leftMargin="6" rightMargin="9"/></DiscretizeBin>
      </Discretize>
    </DerivedField>
    <DerivedField name="mapped" optype="continuous" dataType="double">
      <MapValues outputColumn="weight" mapMissingTo="0" defaultValue="-1" dataType="double">
        <FieldColumnPair field="color" column="c"/><FieldColumnPair field="code" column="k"/>
        <InlineTable>
          <row><c>red</c><k>a</k><weight>1.5</weight></row>
          <row><c>red</c><k>b</k><weight>2.5</weight></row>
          <row><c>green</c><k>a</k><weight>-0.5</weight></row>
          <row><c>blue</c><k>b</k><weight>4</weight></row>
        </InlineTable>
      </MapValues>
    </DerivedField>
    <DerivedField name="user_fn" optype="continuous" dataType="double">
      <Apply function="scale_shift"><FieldRef field="x1"/><Constant dataType="double">3</Constant></Apply>
    </DerivedField>
    <DerivedField name="user_clip" optype="continuous" dataType="double">
      <Apply function="clip01"><Apply function="/"><FieldRef field="x2"/><Constant dataType="double">8</Constant></Apply></Apply>
    </DerivedField>
  </TransformationDictionary>"""
    outputs = "\n".join(
        f'      <OutputField name="out_{f}" optype="{op}" dataType="{dt}" feature="transformedValue"><FieldRef field="{f}"/></OutputField>'
        for f, op, dt in (("nc_asis", "continuous", "double"), ("nc_missing", "continuous", "double"), ("nc_extreme", "continuous", "double"),
                          ("nd_red", "continuous", "double"), ("disc_x2", "categorical", "string"), ("mapped", "continuous", "double"),
                          ("user_fn", "continuous", "double"), ("user_clip", "continuous", "double")))
    body = f"""  <RegressionModel modelName="transforms" functionName="regression">
    <MiningSchema><MiningField name="y" usageType="target"/>{STD_MINING}<MiningField name="n"/><MiningField name="code"/></MiningSchema>
    <Output>
{outputs}
    </Output>
    <RegressionTable intercept="0.5">
      <NumericPredictor name="nc_asis" coefficient="1.1"/><NumericPredictor name="nc_missing" coefficient="0.7"/>
      <NumericPredictor name="nc_extreme" coefficient="-0.9"/><NumericPredictor name="nd_red" coefficient="2"/>
      <CategoricalPredictor name="disc_x2" value="low" coefficient="1"/><CategoricalPredictor name="disc_x2" value="high" coefficient="-1"/>
      <CategoricalPredictor name="disc_x2" value="missing" coefficient="3"/><CategoricalPredictor name="disc_x2" value="other" coefficient="5"/>
      <NumericPredictor name="mapped" coefficient="0.25"/><NumericPredictor name="user_fn" coefficient="0.1"/><NumericPredictor name="user_clip" coefficient="1.3"/>
    </RegressionTable>
  </RegressionModel>"""
    rows = xrows(seed=SEED + 17, ints=True)
    rng = np.random.default_rng(SEED + 18)
    rows["x2"] = np.round(rng.uniform(-1, 11, len(rows)), 2)
    rows["code"] = [str(c) for c in rng.choice(["a", "b", "c"], len(rows))]
    extra = [{"x1": v, "x2": w, "color": "red", "n": "3", "code": "a"} for v, w in (("-2", "2.5"), ("2", "6"), ("0", "9"), ("-2.0001", "0"), ("2.0001", "8.9999"))]
    out.append(case("hw_transforms_norm_discretize_map", "TransformationDictionary: NormContinuous (asIs/asMissingValues+mapMissingTo/asExtremeValues), NormDiscrete, Discretize (closures, mapMissingTo, defaultValue), MapValues (2 keys, InlineTable), DefineFunction; transformedValue outputs",
                    doc(fields, body, tdict), rows, extra))

    # Apply with built-in functions, as local transformations, one output per expression
    exprs = [
        ("f_add", "continuous", "double", '<Apply function="+"><FieldRef field="x1"/><FieldRef field="x2"/></Apply>'),
        ("f_sub", "continuous", "double", '<Apply function="-"><FieldRef field="x1"/><FieldRef field="x2"/></Apply>'),
        ("f_div", "continuous", "double", '<Apply function="/"><FieldRef field="x1"/><FieldRef field="x2"/></Apply>'),
        ("f_log10", "continuous", "double", '<Apply function="log10"><Apply function="+"><Apply function="abs"><FieldRef field="x2"/></Apply><Constant dataType="double">0.001</Constant></Apply></Apply>'),
        ("f_ln", "continuous", "double", '<Apply function="ln"><Apply function="+"><Apply function="abs"><FieldRef field="x2"/></Apply><Constant dataType="double">0.5</Constant></Apply></Apply>'),
        ("f_exp", "continuous", "double", '<Apply function="exp"><FieldRef field="x1"/></Apply>'),
        ("f_sqrt", "continuous", "double", '<Apply function="sqrt"><Apply function="abs"><FieldRef field="x1"/></Apply></Apply>'),
        ("f_abs", "continuous", "double", '<Apply function="abs"><FieldRef field="x1"/></Apply>'),
        ("f_pow", "continuous", "double", '<Apply function="pow"><FieldRef field="x1"/><Constant dataType="double">3</Constant></Apply>'),
        ("f_threshold", "continuous", "double", '<Apply function="threshold"><FieldRef field="x1"/><Constant dataType="double">0</Constant></Apply>'),
        ("f_floor", "continuous", "double", '<Apply function="floor"><FieldRef field="x1"/></Apply>'),
        ("f_ceil", "continuous", "double", '<Apply function="ceil"><FieldRef field="x1"/></Apply>'),
        ("f_round", "continuous", "double", '<Apply function="round"><Apply function="*"><FieldRef field="x1"/><Constant dataType="double">2</Constant></Apply></Apply>'),
        ("f_min", "continuous", "double", '<Apply function="min"><FieldRef field="x1"/><FieldRef field="x2"/><Constant dataType="double">1</Constant></Apply>'),
        ("f_max", "continuous", "double", '<Apply function="max"><FieldRef field="x1"/><FieldRef field="x2"/></Apply>'),
        ("f_sum", "continuous", "double", '<Apply function="sum"><FieldRef field="x1"/><FieldRef field="x2"/><Constant dataType="double">10</Constant></Apply>'),
        ("f_avg", "continuous", "double", '<Apply function="avg"><FieldRef field="x1"/><FieldRef field="x2"/></Apply>'),
        ("f_if", "continuous", "double", '<Apply function="if"><Apply function="greaterThan"><FieldRef field="x1"/><Constant dataType="double">0</Constant></Apply><Constant dataType="double">1</Constant><Constant dataType="double">-1</Constant></Apply>'),
        ("f_and", "categorical", "boolean", '<Apply function="and"><Apply function="lessThan"><FieldRef field="x1"/><FieldRef field="x2"/></Apply><Apply function="notEqual"><FieldRef field="color"/><Constant dataType="string">red</Constant></Apply></Apply>'),
        ("f_or", "categorical", "boolean", '<Apply function="or"><Apply function="greaterOrEqual"><FieldRef field="x1"/><Constant dataType="double">1</Constant></Apply><Apply function="equal"><FieldRef field="color"/><Constant dataType="string">blue</Constant></Apply></Apply>'),
        ("f_not", "categorical", "boolean", '<Apply function="not"><Apply function="lessOrEqual"><FieldRef field="x2"/><Constant dataType="double">5</Constant></Apply></Apply>'),
        ("f_isin", "categorical", "boolean", '<Apply function="isIn"><FieldRef field="color"/><Constant dataType="string">red</Constant><Constant dataType="string">green</Constant></Apply>'),
        ("f_ismissing", "categorical", "boolean", '<Apply function="isMissing"><FieldRef field="x1"/></Apply>'),
        ("f_isnotmissing", "categorical", "boolean", '<Apply function="isNotMissing"><FieldRef field="color"/></Apply>'),
        ("f_isvalid", "categorical", "boolean", '<Apply function="isValid"><FieldRef field="x2"/></Apply>'),
        ("f_uppercase", "categorical", "string", '<Apply function="uppercase"><FieldRef field="color"/></Apply>'),
        ("f_substring", "categorical", "string", '<Apply function="substring"><FieldRef field="color"/><Constant dataType="integer">2</Constant><Constant dataType="integer">3</Constant></Apply>'),
        ("f_concat", "categorical", "string", '<Apply function="concat"><FieldRef field="color"/><Constant dataType="string">-</Constant><FieldRef field="n"/></Apply>'),
        ("f_trim", "categorical", "string", '<Apply function="trimBlanks"><Apply function="concat"><Constant dataType="string">  </Constant><FieldRef field="color"/><Constant dataType="string"> </Constant></Apply></Apply>'),
        ("f_replace", "categorical", "string", '<Apply function="replace"><FieldRef field="color"/><Constant dataType="string">[aeiou]</Constant><Constant dataType="string">_</Constant></Apply>'),
        ("f_matches", "categorical", "boolean", '<Apply function="matches"><FieldRef field="color"/><Constant dataType="string">^(r|g)</Constant></Apply>'),
        ("f_strlen", "continuous", "integer", '<Apply function="stringLength"><FieldRef field="color"/></Apply>'),
        ("f_format", "categorical", "string", '<Apply function="formatNumber"><FieldRef field="x1"/><Constant dataType="string">%.3f</Constant></Apply>'),
        ("f_modulo", "continuous", "integer", '<Apply function="modulo"><FieldRef field="n"/><Constant dataType="integer">3</Constant></Apply>'),
        ("f_int_div", "continuous", "double", '<Apply function="/"><FieldRef field="n"/><Constant dataType="integer">4</Constant></Apply>'),
        ("f_default", "continuous", "double", '<Apply function="+" defaultValue="-99"><FieldRef field="x1"/><Constant dataType="double">1</Constant></Apply>'),
        ("f_map_missing", "continuous", "double", '<Apply function="*" mapMissingTo="-7"><FieldRef field="x1"/><Constant dataType="double">2</Constant></Apply>'),
        ("f_expm1", "continuous", "double", '<Apply function="expm1"><Apply function="/"><FieldRef field="x1"/><Constant dataType="double">1000</Constant></Apply></Apply>'),
        ("f_ln1p", "continuous", "double", '<Apply function="ln1p"><Apply function="/"><FieldRef field="x2"/><Constant dataType="double">1000</Constant></Apply></Apply>'),
        ("f_hypot", "continuous", "double", '<Apply function="hypot"><FieldRef field="x1"/><FieldRef field="x2"/></Apply>'),
        ("f_atan", "continuous", "double", '<Apply function="atan"><FieldRef field="x1"/></Apply>'),
    ]
    local = "\n".join(f'      <DerivedField name="{n}" optype="{op}" dataType="{dt}">{e}</DerivedField>' for n, op, dt, e in exprs)
    outs = "\n".join(f'      <OutputField name="o_{n}" optype="{op}" dataType="{dt}" feature="transformedValue"><FieldRef field="{n}"/></OutputField>' for n, op, dt, e in exprs)
    afields = "\n".join([df("y", "continuous", "double"),
                         '    <DataField name="x1" optype="continuous" dataType="double"/>',
                         '    <DataField name="x2" optype="continuous" dataType="double"><Interval closure="closedClosed" leftMargin="-5" rightMargin="15"/></DataField>',
                         df("color", "categorical", "string"), df("n", "continuous", "integer")])
    body = f"""  <RegressionModel modelName="apply_functions" functionName="regression">
    <MiningSchema><MiningField name="y" usageType="target"/>{STD_MINING}<MiningField name="n"/></MiningSchema>
    <Output>
{outs}
    </Output>
    <LocalTransformations>
{local}
    </LocalTransformations>
    <RegressionTable intercept="1"><NumericPredictor name="x1" coefficient="0.5"/></RegressionTable>
  </RegressionModel>"""
    rows = xrows(seed=SEED + 19, ints=True)
    rng = np.random.default_rng(SEED + 20)
    rows["x2"] = np.round(rng.uniform(-2, 12, len(rows)), 3)
    extra = [{"x1": "0", "x2": "0", "color": "red", "n": "0"}, {"x1": "-1.5", "x2": "-1", "color": "green", "n": "-7"},
             {"x1": "2.5", "x2": "100", "color": "blue", "n": "5"}, {"x1": "-0.5", "x2": "5", "color": "", "n": "2"},
             {"x1": "1e-300", "x2": "1e300", "color": "red", "n": "1"}]
    out.append(case("hw_apply_builtin_functions", "LocalTransformations with Apply: arithmetic, math, comparisons, boolean logic, if, isMissing/isNotMissing/isValid, string functions, defaultValue/mapMissingTo; transformedValue outputs; x2 has a valid Interval",
                    doc(afields, body), rows, extra))
    return out


# ---------------------------------------------------------------- MiningSchema treatments

def mining_schema_cases():
    fields = "\n".join([
        df("y", "continuous", "double"),
        '    <DataField name="x1" optype="continuous" dataType="double"><Interval closure="closedClosed" leftMargin="-2" rightMargin="2"/><Value value="-999" property="missing"/></DataField>',
        '    <DataField name="x2" optype="continuous" dataType="double"><Interval closure="openClosed" leftMargin="0" rightMargin="10"/></DataField>',
        '    <DataField name="x3" optype="continuous" dataType="double"><Value value="99" property="invalid"/></DataField>',
        '    <DataField name="color" optype="categorical" dataType="string"><Value value="red"/><Value value="green"/><Value value="blue"/><Value value="NA" property="missing"/></DataField>',
        '    <DataField name="n" optype="continuous" dataType="integer"/>',
    ])
    out = []
    for variant in ("a", "b"):
        if variant == "a":
            ms = """<MiningField name="y" usageType="target"/>
      <MiningField name="x1" outliers="asExtremeValues" lowValue="-1.5" highValue="1.5" missingValueReplacement="0.25" invalidValueTreatment="asMissing"/>
      <MiningField name="x2" outliers="asMissingValues" lowValue="1" highValue="9" missingValueReplacement="5" invalidValueTreatment="asIs"/>
      <MiningField name="x3" invalidValueTreatment="returnInvalid" missingValueTreatment="asMean" missingValueReplacement="2"/>
      <MiningField name="color" missingValueReplacement="green" invalidValueTreatment="asMissing"/>
      <MiningField name="n" outliers="asIs" missingValueReplacement="4"/>"""
            note = "asExtremeValues/asMissingValues outliers, missingValueReplacement, invalidValueTreatment asMissing/asIs/returnInvalid, Interval validity, Value property=missing/invalid"
        else:
            ms = """<MiningField name="y" usageType="target"/>
      <MiningField name="x1" invalidValueTreatment="asValue" invalidValueReplacement="1"/>
      <MiningField name="x2" invalidValueTreatment="returnInvalid"/>
      <MiningField name="x3" invalidValueTreatment="asIs"/>
      <MiningField name="color" invalidValueTreatment="asValue" invalidValueReplacement="blue" missingValueReplacement="red"/>
      <MiningField name="n" missingValueTreatment="returnInvalid"/>"""
            note = "invalidValueTreatment asValue/returnInvalid/asIs with invalidValueReplacement, missingValueTreatment=returnInvalid (PMML 4.4)"
        body = f"""  <RegressionModel modelName="schema_{variant}" functionName="regression">
    <MiningSchema>
      {ms}
    </MiningSchema>
    <Output>
      <OutputField name="pred" optype="continuous" dataType="double" feature="predictedValue"/>
      <OutputField name="x1_seen" optype="continuous" dataType="double" feature="transformedValue"><FieldRef field="x1"/></OutputField>
      <OutputField name="x2_seen" optype="continuous" dataType="double" feature="transformedValue"><FieldRef field="x2"/></OutputField>
      <OutputField name="color_seen" optype="categorical" dataType="string" feature="transformedValue"><FieldRef field="color"/></OutputField>
    </Output>
    <RegressionTable intercept="2"><NumericPredictor name="x1" coefficient="1.5"/><NumericPredictor name="x2" coefficient="-0.25"/><NumericPredictor name="x3" coefficient="0.1"/>
      <NumericPredictor name="n" coefficient="0.01"/><CategoricalPredictor name="color" value="red" coefficient="1"/><CategoricalPredictor name="color" value="blue" coefficient="-1"/></RegressionTable>
  </RegressionModel>"""
        rng = np.random.default_rng(SEED + 21)
        nrows = 100
        x2lo, x2hi = (-1, 11) if variant == "a" else (0.01, 10)
        rows = pd.DataFrame({"x1": np.round(rng.uniform(-2.5, 2.5, nrows), 2), "x2": np.round(rng.uniform(x2lo, x2hi, nrows), 2),
                             "x3": np.round(rng.uniform(0, 5, nrows), 2), "color": [str(c) for c in rng.choice(["red", "green", "blue"], nrows)],
                             "n": rng.integers(0, 10, nrows)})
        extra = [{"x1": "-999", "x2": "5", "x3": "1", "color": "NA", "n": "3"}, {"x1": "2", "x2": "0", "x3": "99", "color": "red", "n": "1"},
                 {"x1": "-2", "x2": "10", "x3": "1", "color": "purple", "n": None}, {"x1": "1.5", "x2": "1", "x3": "2", "color": "blue", "n": "2"},
                 {"x1": "-1.5", "x2": "9", "x3": "3", "color": "green", "n": "2.5"}, {"x1": "3", "x2": "10.5", "x3": None, "color": None, "n": "x"}]
        out.append(case(f"hw_mining_schema_{variant}", "RegressionModel + MiningSchema/DataDictionary treatments: " + note,
                        doc(fields, body), rows, extra))
    return out


# ---------------------------------------------------------------- Clustering

def clustering_cases():
    out = []
    fields = "\n".join([df("x1", "continuous", "double"), df("x2", "continuous", "double"), df("x3", "continuous", "double")])
    for measure, kind, cmp_ in (("euclidean", "distance", "absDiff"), ("cityBlock", "distance", "absDiff"), ("chebychev", "distance", "absDiff"),
                                ("minkowski", "distance", "absDiff"), ("squaredEuclidean", "distance", "absDiff")):
        m = f'<{measure} p-parameter="3"/>' if measure == "minkowski" else f"<{measure}/>"
        sim = ' similarityScale="2.0"' if cmp_ == "gaussSim" else ""
        body = f"""  <ClusteringModel modelName="clu_{measure}" functionName="clustering" modelClass="centerBased" numberOfClusters="3">
    <MiningSchema><MiningField name="x1"/><MiningField name="x2"/><MiningField name="x3" missingValueReplacement="0"/></MiningSchema>
    <Output>
      <OutputField name="cluster" optype="categorical" dataType="string" feature="predictedValue"/>
      <OutputField name="cluster_name" optype="categorical" dataType="string" feature="predictedDisplayValue"/>
      <OutputField name="aff1" optype="continuous" dataType="double" feature="affinity" value="c1"/>
      <OutputField name="aff2" optype="continuous" dataType="double" feature="affinity" value="c2"/>
      <OutputField name="aff3" optype="continuous" dataType="double" feature="affinity" value="c3"/>
      <OutputField name="entity" optype="categorical" dataType="string" feature="entityId"/>
    </Output>
    <ComparisonMeasure kind="{kind}" compareFunction="{cmp_}">{m}</ComparisonMeasure>
    <ClusteringField field="x1" fieldWeight="1.0"/>
    <ClusteringField field="x2" fieldWeight="0.5"{sim}/>
    <ClusteringField field="x3" fieldWeight="2.0" compareFunction="absDiff"/>
    <Cluster id="c1" name="low"><Array n="3" type="real">-1 0 0.5</Array></Cluster>
    <Cluster id="c2" name="mid"><Array n="3" type="real">0.5 5 -0.5</Array></Cluster>
    <Cluster id="c3" name="high"><Array n="3" type="real">2 8 1</Array></Cluster>
  </ClusteringModel>"""
        rng = np.random.default_rng(SEED + 22)
        n = 100
        rows = pd.DataFrame({"x1": np.round(rng.uniform(-2, 3, n), 3), "x2": np.round(rng.uniform(-1, 10, n), 3), "x3": np.round(rng.normal(0, 1, n), 3)})
        out.append(case(f"hw_clustering_{measure}", f"ClusteringModel centerBased, {measure} ({cmp_} compare), field weights, missingValueReplacement; predictedDisplayValue/affinity/entityId outputs",
                        doc(fields, body), rows))
    return out


# ---------------------------------------------------------------- NeuralNetwork activations

def neural_cases():
    out = []
    groups = [("threshold", "logistic", "tanh", "identity", "exponential", "reciprocal"),
              ("square", "Gauss", "sine", "cosine", "Elliott", "arctan", "rectifier")]
    for gi, acts in enumerate(groups):
        rng = np.random.default_rng(SEED + 30 + gi)
        layers = []
        prev = ["0", "1"]
        nid = 10
        for li, act in enumerate(acts):
            neurons = []
            ids = []
            for k in range(2):
                w = "".join(f'<Con from="{p}" weight="{round(float(rng.normal(0, 0.6)), 4)}"/>' for p in prev)
                extra = ' threshold="0.1"' if act == "threshold" else ""
                neurons.append(f'<Neuron id="{nid}" bias="{round(float(rng.normal(0, 0.3)), 4)}">{w}</Neuron>')
                ids.append(str(nid))
                nid += 1
            layers.append(f'      <NeuralLayer activationFunction="{act}"{extra}>{"".join(neurons)}</NeuralLayer>')
            prev = ids
        classification = gi == 0
        if classification:
            outw = "".join(f'<Neuron id="o{c}" bias="{0.1 * c}">' + "".join(f'<Con from="{p}" weight="{round(float(rng.normal(0, 1)), 4)}"/>' for p in prev) + "</Neuron>" for c in range(3))
            layers.append(f'      <NeuralLayer activationFunction="identity" normalizationMethod="softmax">{outw}</NeuralLayer>')
            outputs = "".join(f'<NeuralOutput outputNeuron="o{c}"><DerivedField optype="categorical" dataType="string"><NormDiscrete field="cls" value="{v}"/></DerivedField></NeuralOutput>' for c, v in enumerate("ABC"))
            target = df("cls", "categorical", "string", ("A", "B", "C"))
            ms_t = '<MiningField name="cls" usageType="target"/>'
            outf = """<Output><OutputField name="pA" optype="continuous" dataType="double" feature="probability" value="A"/><OutputField name="pB" optype="continuous" dataType="double" feature="probability" value="B"/><OutputField name="pC" optype="continuous" dataType="double" feature="probability" value="C"/></Output>"""
            fn = "classification"
        else:
            outw = '<Neuron id="o0" bias="0.2">' + "".join(f'<Con from="{p}" weight="{round(float(rng.normal(0, 1)), 4)}"/>' for p in prev) + "</Neuron>"
            layers.append(f'      <NeuralLayer activationFunction="identity">{outw}</NeuralLayer>')
            outputs = '<NeuralOutput outputNeuron="o0"><DerivedField optype="continuous" dataType="double"><NormContinuous field="y"><LinearNorm orig="0" norm="0"/><LinearNorm orig="100" norm="1"/></NormContinuous></DerivedField></NeuralOutput>'
            target = df("y", "continuous", "double")
            ms_t = '<MiningField name="y" usageType="target"/>'
            outf = ""
            fn = "regression"
        fields = "\n".join([target, df("x1", "continuous", "double"), df("color", "categorical", "string", ("red", "green", "blue"))])
        body = f"""  <NeuralNetwork modelName="nn_{gi}" functionName="{fn}" activationFunction="logistic" numberOfLayers="{len(layers)}">
    <MiningSchema>{ms_t}<MiningField name="x1"/><MiningField name="color"/></MiningSchema>
    {outf}
    <NeuralInputs numberOfInputs="2">
      <NeuralInput id="0"><DerivedField optype="continuous" dataType="double"><NormContinuous field="x1"><LinearNorm orig="-3" norm="-1"/><LinearNorm orig="3" norm="1"/></NormContinuous></DerivedField></NeuralInput>
      <NeuralInput id="1"><DerivedField optype="continuous" dataType="double"><NormDiscrete field="color" value="red"/></DerivedField></NeuralInput>
    </NeuralInputs>
{chr(10).join(layers)}
    <NeuralOutputs numberOfOutputs="{3 if classification else 1}">{outputs}</NeuralOutputs>
  </NeuralNetwork>"""
        out.append(case(f"hw_neural_activations_{gi + 1}", f"NeuralNetwork {fn}, one layer per activation function: {', '.join(acts)}" + ("; softmax output layer" if classification else "; NormContinuous-denormalised output"),
                        doc(fields, body), xrows(seed=SEED + 40 + gi)[["x1", "color"]]))
    return out


# ---------------------------------------------------------------- SVM one-against-all

def svm_cases():
    fields = "\n".join([df("cls", "categorical", "string", ("A", "B", "C")), df("x1", "continuous", "double"), df("x2", "continuous", "double")])
    vecs = [("v1", -1.0, 2.0), ("v2", 0.5, 5.0), ("v3", 2.0, 8.0), ("v4", -2.0, 7.0)]
    vdict = "".join(f'<VectorInstance id="{i}"><Array n="2" type="real">{a} {b}</Array></VectorInstance>' for i, a, b in vecs)
    machines = []
    for cat, alt, coefs, b in (("A", None, (0.8, -0.5, 0.3, 0.1), -0.2), ("B", None, (-0.4, 0.9, -0.2, 0.0), 0.1), ("C", None, (0.1, -0.3, 0.7, -0.6), 0.05)):
        cs = "".join(f'<Coefficient value="{c}"/>' for c in coefs)
        sv = "".join(f'<SupportVector vectorId="{v[0]}"/>' for v in vecs)
        machines.append(f'<SupportVectorMachine targetCategory="{cat}"><SupportVectors numberOfAttributes="2" numberOfSupportVectors="4">{sv}</SupportVectors><Coefficients numberOfCoefficients="4" absoluteValue="{b}">{cs}</Coefficients></SupportVectorMachine>')
    body = f"""  <SupportVectorMachineModel modelName="svm_ova" functionName="classification" classificationMethod="OneAgainstAll" svmRepresentation="SupportVectors">
    <MiningSchema><MiningField name="cls" usageType="target"/><MiningField name="x1"/><MiningField name="x2"/></MiningSchema>
    <RadialBasisKernelType gamma="0.15"/>
    <VectorDictionary numberOfVectors="4"><VectorFields numberOfFields="2"><FieldRef field="x1"/><FieldRef field="x2"/></VectorFields>{vdict}</VectorDictionary>
    {"".join(machines)}
  </SupportVectorMachineModel>"""
    return [case("hw_svm_one_against_all_rbf", "SupportVectorMachineModel classificationMethod=OneAgainstAll, RBF kernel", doc(fields, body), xrows(seed=SEED + 50)[["x1", "x2"]])]


def extra_cases():
    out = []
    # Targets with priors: a classification tree whose nullPrediction falls back to the priors
    fields = "\n".join([df("cls", "categorical", "string", ("A", "B", "C")), STD_FIELDS])
    tree = tree_classification("nullPrediction", "returnNullPrediction").replace(
        "<Output>", """<Targets><Target field="cls"><TargetValue value="A" priorProbability="0.2"/><TargetValue value="B" priorProbability="0.5"/><TargetValue value="C" priorProbability="0.3"/></Target></Targets>
    <Output>""", 1)
    tree = tree.replace('      <OutputField name="conf" optype="continuous" dataType="double" feature="confidence"/>\n', "")
    tree = tree.replace('      <OutputField name="node" optype="categorical" dataType="string" feature="entityId"/>\n', "")
    # Targets must come after Output in the schema order: move it
    tree = tree.replace("""<Targets><Target field="cls"><TargetValue value="A" priorProbability="0.2"/><TargetValue value="B" priorProbability="0.5"/><TargetValue value="C" priorProbability="0.3"/></Target></Targets>
    <Output>""", "<Output>", 1)
    tree = tree.replace("</Output>", """</Output>
    <Targets><Target field="cls"><TargetValue value="A" priorProbability="0.2"/><TargetValue value="B" priorProbability="0.5"/><TargetValue value="C" priorProbability="0.3"/></Target></Targets>""", 1)
    extra = [{"x1": None, "x2": "4", "color": "green"}, {"x1": "2", "x2": "3", "color": "yellow"}, {"x1": None, "x2": None, "color": None}]
    out.append(case("hw_targets_priors", "TreeModel classification (nullPrediction / returnNullPrediction) with Targets priorProbability: a null prediction falls back to the priors",
                    doc(fields, tree), xrows(seed=SEED + 60, colors=("red", "green", "blue", "yellow")), extra))
    # Output features: predictedDisplayValue, transformedValue chained on other outputs, decision, probability
    bfields = "\n".join([df("cls", "categorical", "string", ("yes", "no")), STD_FIELDS])
    body = f"""  <RegressionModel modelName="outputs" functionName="classification" normalizationMethod="logit">
    <MiningSchema><MiningField name="cls" usageType="target"/>{STD_MINING}</MiningSchema>
    <Output>
      <OutputField name="pred" optype="categorical" dataType="string" feature="predictedValue"/>
      <OutputField name="display" optype="categorical" dataType="string" feature="predictedDisplayValue"/>
      <OutputField name="p_yes" optype="continuous" dataType="double" feature="probability" value="yes"/>
      <OutputField name="p_max" optype="continuous" dataType="double" feature="probability"/>
      <OutputField name="odds" optype="continuous" dataType="double" feature="transformedValue">
        <Apply function="/"><FieldRef field="p_yes"/><Apply function="-"><Constant dataType="double">1</Constant><FieldRef field="p_yes"/></Apply></Apply>
      </OutputField>
      <OutputField name="band" optype="categorical" dataType="string" feature="transformedValue">
        <Discretize field="p_yes">
          <DiscretizeBin binValue="low"><Interval closure="closedOpen" leftMargin="0" rightMargin="0.3"/></DiscretizeBin>
          <DiscretizeBin binValue="mid"><Interval closure="closedOpen" leftMargin="0.3" rightMargin="0.7"/></DiscretizeBin>
          <DiscretizeBin binValue="high"><Interval closure="closedClosed" leftMargin="0.7" rightMargin="1"/></DiscretizeBin>
        </Discretize>
      </OutputField>
      <OutputField name="action" optype="categorical" dataType="string" feature="decision">
        <Decisions><Decision value="approve"/><Decision value="review"/><Decision value="reject"/></Decisions>
        <Apply function="if"><Apply function="greaterThan"><FieldRef field="p_yes"/><Constant dataType="double">0.7</Constant></Apply>
          <Constant dataType="string">approve</Constant>
          <Apply function="if"><Apply function="greaterThan"><FieldRef field="p_yes"/><Constant dataType="double">0.3</Constant></Apply><Constant dataType="string">review</Constant><Constant dataType="string">reject</Constant></Apply>
        </Apply>
      </OutputField>
      <OutputField name="label" optype="categorical" dataType="string" feature="transformedValue">
        <MapValues outputColumn="out"><FieldColumnPair field="pred" column="in"/>
          <InlineTable><row><in>yes</in><out>POSITIVE</out></row><row><in>no</in><out>NEGATIVE</out></row></InlineTable></MapValues>
      </OutputField>
    </Output>
    <RegressionTable intercept="0.1" targetCategory="yes"><NumericPredictor name="x1" coefficient="0.9"/><NumericPredictor name="x2" coefficient="-0.1"/><CategoricalPredictor name="color" value="blue" coefficient="0.7"/></RegressionTable>
    <RegressionTable intercept="0" targetCategory="no"/>
  </RegressionModel>"""
    body = body.replace('<DataField name="cls" optype="categorical" dataType="string">', '')
    bfields = bfields.replace('<Value value="yes"/>', '<Value value="yes" displayValue="Yes!"/>').replace('<Value value="no"/>', '<Value value="no" displayValue="No."/>')
    out.append(case("hw_output_features", "RegressionModel logit classification with OutputFields: predictedValue, predictedDisplayValue (Value displayValue), probability with and without value, transformedValue (Apply, Discretize, MapValues over other outputs), decision",
                    doc(bfields, body), xrows(seed=SEED + 61)))
    # residual: the target value is an input too
    rfields = "\n".join([df("y", "continuous", "double"), STD_FIELDS])
    body = f"""  <RegressionModel modelName="residual" functionName="regression">
    <MiningSchema><MiningField name="y" usageType="target"/>{STD_MINING}</MiningSchema>
    <Output>
      <OutputField name="pred" optype="continuous" dataType="double" feature="predictedValue"/>
      <OutputField name="resid" optype="continuous" dataType="double" feature="residual"/>
    </Output>
    <RegressionTable intercept="0.75"><NumericPredictor name="x1" coefficient="1.25"/><NumericPredictor name="x2" coefficient="-0.5"/><CategoricalPredictor name="color" value="red" coefficient="2"/></RegressionTable>
  </RegressionModel>"""
    rows = xrows(seed=SEED + 63)
    rows["y"] = np.round(np.random.default_rng(SEED + 64).normal(0, 3, len(rows)), 3)
    out.append(case("hw_output_residual", "RegressionModel with a residual OutputField: the target field is read from the input row too",
                    doc(rfields, body), rows))
    # clustering with a similarity measure over binary fields
    bf = "\n".join([df(f"b{i}", "continuous", "integer") for i in range(1, 6)])
    vecs = {"c1": "1 0 1 0 1", "c2": "0 1 1 1 0", "c3": "1 1 0 0 0"}
    for measure in ("simpleMatching", "jaccard", "tanimoto"):
        clus = "".join(f'<Cluster id="{k}"><Array n="5" type="real">{v}</Array></Cluster>' for k, v in vecs.items())
        body = f"""  <ClusteringModel modelName="sim_{measure}" functionName="clustering" modelClass="centerBased" numberOfClusters="3">
    <MiningSchema>{"".join(f'<MiningField name="b{i}"/>' for i in range(1, 6))}</MiningSchema>
    <Output>
      <OutputField name="cluster" optype="categorical" dataType="string" feature="predictedValue"/>
      <OutputField name="aff1" optype="continuous" dataType="double" feature="affinity" value="c1"/>
      <OutputField name="aff2" optype="continuous" dataType="double" feature="affinity" value="c2"/>
      <OutputField name="aff3" optype="continuous" dataType="double" feature="affinity" value="c3"/>
    </Output>
    <ComparisonMeasure kind="similarity"><{measure}/></ComparisonMeasure>
    {"".join(f'<ClusteringField field="b{i}"/>' for i in range(1, 6))}
    {clus}
  </ClusteringModel>"""
        rng = np.random.default_rng(SEED + 65)
        rows = pd.DataFrame({f"b{i}": rng.integers(0, 2, 60) for i in range(1, 6)})
        out.append(case(f"hw_clustering_similarity_{measure}", f"ClusteringModel with a similarity ComparisonMeasure ({measure}) over 0/1 integer fields. JPMML 1.7.7 errors on a missing input here with a NullPointerException (a JPMML bug, recorded as an error row) and on values other than 0/1 (EvaluationException: Expected false or true)",
                        doc(bf, body), rows))
    # radialBasis neural network
    fields = "\n".join([df("y", "continuous", "double"), df("x1", "continuous", "double"), df("x2", "continuous", "double")])
    body = """  <NeuralNetwork modelName="rbf_net" functionName="regression" activationFunction="radialBasis" width="1.5" altitude="1.0">
    <MiningSchema><MiningField name="y" usageType="target"/><MiningField name="x1"/><MiningField name="x2"/></MiningSchema>
    <NeuralInputs numberOfInputs="2">
      <NeuralInput id="0"><DerivedField optype="continuous" dataType="double"><FieldRef field="x1"/></DerivedField></NeuralInput>
      <NeuralInput id="1"><DerivedField optype="continuous" dataType="double"><NormContinuous field="x2"><LinearNorm orig="0" norm="-1"/><LinearNorm orig="10" norm="1"/></NormContinuous></DerivedField></NeuralInput>
    </NeuralInputs>
    <NeuralLayer>
      <Neuron id="h1" bias="0" width="1.0"><Con from="0" weight="-1"/><Con from="1" weight="0.5"/></Neuron>
      <Neuron id="h2" bias="0" altitude="2.0"><Con from="0" weight="1"/><Con from="1" weight="-0.5"/></Neuron>
      <Neuron id="h3" bias="0"><Con from="0" weight="0"/><Con from="1" weight="0"/></Neuron>
    </NeuralLayer>
    <NeuralLayer activationFunction="identity">
      <Neuron id="o" bias="0.5"><Con from="h1" weight="2"/><Con from="h2" weight="-1.5"/><Con from="h3" weight="0.8"/></Neuron>
    </NeuralLayer>
    <NeuralOutputs numberOfOutputs="1"><NeuralOutput outputNeuron="o"><DerivedField optype="continuous" dataType="double"><FieldRef field="y"/></DerivedField></NeuralOutput></NeuralOutputs>
  </NeuralNetwork>"""
    out.append(case("hw_neural_radial_basis", "NeuralNetwork regression with radialBasis activation (network width/altitude, per-neuron overrides); centres are the Con weights",
                    doc(fields, body), xrows(seed=SEED + 66)[["x1", "x2"]]))
    # how input text is parsed per data type
    fields = "\n".join([df("y", "continuous", "double"), df("d", "continuous", "double"), df("f", "continuous", "float"),
                         df("i", "continuous", "integer"), df("b", "categorical", "boolean"),
                         df("s", "categorical", "string", ("a", "b", "c"))])
    body = """  <RegressionModel modelName="parsing" functionName="regression">
    <MiningSchema><MiningField name="y" usageType="target"/><MiningField name="d"/><MiningField name="f"/><MiningField name="i"/><MiningField name="b"/><MiningField name="s"/></MiningSchema>
    <Output>
      <OutputField name="pred" optype="continuous" dataType="double" feature="predictedValue"/>
      <OutputField name="d_seen" optype="continuous" dataType="double" feature="transformedValue"><FieldRef field="d"/></OutputField>
      <OutputField name="f_seen" optype="continuous" dataType="float" feature="transformedValue"><FieldRef field="f"/></OutputField>
      <OutputField name="f_as_double" optype="continuous" dataType="double" feature="transformedValue"><Apply function="*"><FieldRef field="f"/><Constant dataType="double">1</Constant></Apply></OutputField>
      <OutputField name="i_seen" optype="continuous" dataType="integer" feature="transformedValue"><FieldRef field="i"/></OutputField>
      <OutputField name="b_seen" optype="categorical" dataType="boolean" feature="transformedValue"><FieldRef field="b"/></OutputField>
      <OutputField name="s_seen" optype="categorical" dataType="string" feature="transformedValue"><FieldRef field="s"/></OutputField>
    </Output>
    <RegressionTable intercept="0"><NumericPredictor name="d" coefficient="1"/><NumericPredictor name="f" coefficient="2"/><NumericPredictor name="i" coefficient="3"/>
      <CategoricalPredictor name="b" value="true" coefficient="4"/><CategoricalPredictor name="s" value="b" coefficient="5"/></RegressionTable>
  </RegressionModel>"""
    ok = {"d": "1.5", "f": "0.1", "i": "2", "b": "true", "s": "a"}
    probes = {
        "d": ["1e3", "1E-2", "+5", "-0", "5.", ".5", "NaN", "Infinity", "-Infinity", "inf", " 5", "5 ", "0x10", "1d", "1_000", "1,5", "1.7976931348623157e308", "4.9e-324", "1e400"],
        "f": ["0.1", "16777217", "3.4028235e38", "3.5e38", "1e-46", "1.00000001", "0.30000001192092896", "NaN", "-0", "1e3"],
        "i": ["3.0", "3.5", "-7", "+7", "2147483647", "2147483648", "9007199254740993", "1e2", "0x10", " 4", "007"],
        "b": ["false", "True", "TRUE", "1", "0", "yes", "t"],
        "s": ["b", "c", "B", " b", "b ", "d"],
    }
    extra = [dict(ok)]
    for fld, vals in probes.items():
        for v in vals:
            extra.append(dict(ok, **{fld: v}))
    out.append(case("hw_input_parsing", "How JPMML parses input text per dataType (double, float, integer, boolean, string): exponent forms, signs, NaN/Infinity, whitespace, hex, overflow, float rounding, integers given as decimals, boolean spellings, case and whitespace in categories; transformedValue outputs echo what JPMML read",
                    doc(fields, body), pd.DataFrame(columns=list(ok)), extra, edges=False))
    # selectAll
    rfields = "\n".join([df("y", "continuous", "double"), STD_FIELDS])
    segs = "\n".join([
        reg_segment("s1", "<True/>", 1.0, 1.0, [("x1", 2.0)]),
        reg_segment("s2", '<SimplePredicate field="x2" operator="greaterThan" value="3"/>', 2.0, -1.0, [("x2", 0.5)]),
    ])
    body = f"""  <MiningModel modelName="mm_selectAll" functionName="regression">
    <MiningSchema><MiningField name="y" usageType="target"/>{STD_MINING}</MiningSchema>
    <Segmentation multipleModelMethod="selectAll">
{segs}
    </Segmentation>
  </MiningModel>"""
    out.append(case("hw_mining_reg_selectAll", "MiningModel regression multipleModelMethod=selectAll (JPMML returns the list of segment results)",
                    doc(rfields, body), xrows(seed=SEED + 62)))
    return out


def cases():
    out = []
    for fn in (scorecard_cases, ruleset_cases, grm_glm_cases, naive_bayes_cases, tree_cases, mining_cases,
               regression_norm_cases, transform_cases, mining_schema_cases, clustering_cases, neural_cases, svm_cases, extra_cases):
        out += fn()
    return out
