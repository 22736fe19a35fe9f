//! Model factories and the registry that maps model types to them.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use crate::error::ModelError;
use crate::location::ModelsDir;
use crate::model::{Model, ModelType};
use crate::pb::model_descriptor::MessageContent;
use crate::pb::ModelDescriptor;

/// Where a factory reads a model from.
#[derive(Clone, Copy, Debug)]
pub enum ModelSource<'a> {
    /// The model's bytes (`ModelDescriptor.data`, [`Model::to_bytes`]).
    Bytes(&'a [u8]),
    /// A file or directory (an already-resolved `location`, or a path given on the command line).
    Path(&'a Path),
}

/// Options for loading a model; every field is optional and format-specific.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// SavedModel: the MetaGraphDef tag (default `serve`).
    pub tag: Option<String>,
    /// SavedModel: the signature (default: the only one, or `serving_default`).
    pub signature: Option<String>,
    /// Tensor models: the input to feed (default: found from the graph).
    pub input: Option<String>,
    /// Tensor models: the outputs to fetch (default: found from the graph or signature).
    pub outputs: Option<Vec<String>>,
    /// Tensor models: the record fields that form the input tensor's columns, in order
    /// (default: the record's values in order).
    pub columns: Option<Vec<String>>,
}

/// Creates models of one type.
pub trait ModelFactory: Send + Sync {
    /// Creates a model from bytes or a path.
    fn create(
        &self,
        source: ModelSource<'_>,
        options: &LoadOptions,
    ) -> Result<Box<dyn Model>, ModelError>;

    /// Restores a model from [`Model::to_bytes`]. The default creates it from the bytes with
    /// default options.
    fn restore(&self, bytes: &[u8]) -> Result<Box<dyn Model>, ModelError> {
        self.create(ModelSource::Bytes(bytes), &LoadOptions::default())
    }
}

/// A factory that always refuses, with a typed error (for formats whose feature is off).
#[cfg(not(all(feature = "tensorflow", feature = "onnx", feature = "pmml")))]
struct Unavailable(fn(ModelType) -> ModelError, ModelType);

#[cfg(not(all(feature = "tensorflow", feature = "onnx", feature = "pmml")))]
impl ModelFactory for Unavailable {
    fn create(&self, _: ModelSource<'_>, _: &LoadOptions) -> Result<Box<dyn Model>, ModelError> {
        Err((self.0)(self.1))
    }
}

/// Maps model types to factories. [`ModelRegistry::with_defaults`] registers the built-in
/// formats; [`ModelRegistry::register`] adds or replaces one (e.g. a PMML evaluator, or a
/// format of your own under [`ModelType::Other`]).
#[derive(Clone, Default)]
pub struct ModelRegistry {
    factories: HashMap<ModelType, Arc<dyn ModelFactory>>,
    models_dir: Option<ModelsDir>,
}

impl fmt::Debug for ModelRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut types: Vec<_> = self.factories.keys().collect();
        types.sort();
        f.debug_struct("ModelRegistry")
            .field("types", &types)
            .field("models_dir", &self.models_dir)
            .finish()
    }
}

impl ModelRegistry {
    /// A registry with no factory.
    pub fn new() -> Self {
        ModelRegistry::default()
    }

    /// A registry with the built-in factories: TensorFlow frozen graphs, SavedModels and ONNX
    /// and PMML (each a typed [`ModelError::FeatureDisabled`] when its feature is off).
    pub fn with_defaults() -> Self {
        let mut r = ModelRegistry::new();
        #[cfg(feature = "tensorflow")]
        {
            r.register(
                ModelType::TensorFlow,
                Arc::new(crate::tf::FrozenGraphFactory),
            );
            r.register(
                ModelType::TensorFlowSaved,
                Arc::new(crate::savedmodel::SavedModelFactory),
            );
        }
        #[cfg(not(feature = "tensorflow"))]
        for t in [ModelType::TensorFlow, ModelType::TensorFlowSaved] {
            r.register(
                t,
                Arc::new(Unavailable(
                    |model_type| ModelError::FeatureDisabled {
                        model_type,
                        feature: "tensorflow",
                    },
                    t,
                )),
            );
        }
        #[cfg(feature = "onnx")]
        r.register(ModelType::Onnx, Arc::new(crate::onnx::OnnxFactory));
        #[cfg(not(feature = "onnx"))]
        r.register(
            ModelType::Onnx,
            Arc::new(Unavailable(
                |model_type| ModelError::FeatureDisabled {
                    model_type,
                    feature: "onnx",
                },
                ModelType::Onnx,
            )),
        );
        #[cfg(feature = "pmml")]
        r.register(ModelType::Pmml, Arc::new(crate::pmml::PmmlFactory));
        #[cfg(not(feature = "pmml"))]
        r.register(
            ModelType::Pmml,
            Arc::new(Unavailable(
                |model_type| ModelError::FeatureDisabled {
                    model_type,
                    feature: "pmml",
                },
                ModelType::Pmml,
            )),
        );
        r
    }

    /// Registers `factory` for `model_type`, returning the factory it replaces.
    pub fn register(
        &mut self,
        model_type: ModelType,
        factory: Arc<dyn ModelFactory>,
    ) -> Option<Arc<dyn ModelFactory>> {
        self.factories.insert(model_type, factory)
    }

    /// Confines descriptor `location`s to `dir` (without it, locations are refused).
    pub fn set_models_dir(&mut self, dir: ModelsDir) {
        self.models_dir = Some(dir);
    }

    /// Builder form of [`ModelRegistry::set_models_dir`].
    pub fn with_models_dir(mut self, dir: ModelsDir) -> Self {
        self.set_models_dir(dir);
        self
    }

    /// The models directory, if set.
    pub fn models_dir(&self) -> Option<&ModelsDir> {
        self.models_dir.as_ref()
    }

    /// The factory for `model_type`.
    pub fn factory(&self, model_type: ModelType) -> Result<&Arc<dyn ModelFactory>, ModelError> {
        self.factories.get(&model_type).ok_or(match model_type {
            ModelType::Other(v) => ModelError::UnknownModelType(v),
            t => ModelError::NoFactory(t),
        })
    }

    /// Creates the model a descriptor carries (by value, or by `location` inside the models
    /// directory).
    pub fn from_descriptor(
        &self,
        descriptor: &ModelDescriptor,
        options: &LoadOptions,
    ) -> Result<Box<dyn Model>, ModelError> {
        let factory = self.factory(ModelType::from_wire(descriptor.modeltype))?;
        match &descriptor.message_content {
            Some(MessageContent::Data(bytes)) => factory.create(ModelSource::Bytes(bytes), options),
            Some(MessageContent::Location(loc)) => {
                let dir = self
                    .models_dir
                    .as_ref()
                    .ok_or_else(|| ModelError::NoModelsDir(loc.clone()))?;
                let path = dir.resolve(loc)?;
                factory.create(ModelSource::Path(&path), options)
            }
            None => Err(ModelError::EmptyDescriptor(descriptor.name.clone())),
        }
    }

    /// Creates a model of `model_type` from a path (no models-directory confinement: for local
    /// tools such as `flowstage score`).
    pub fn load_path(
        &self,
        model_type: ModelType,
        path: &Path,
        options: &LoadOptions,
    ) -> Result<Box<dyn Model>, ModelError> {
        self.factory(model_type)?
            .create(ModelSource::Path(path), options)
    }

    /// Restores a model of `model_type` from [`Model::to_bytes`].
    pub fn restore(
        &self,
        model_type: ModelType,
        bytes: &[u8],
    ) -> Result<Box<dyn Model>, ModelError> {
        self.factory(model_type)?.restore(bytes)
    }
}

/// Guesses a model's type from its path: `.pmml`/`.xml` PMML, `.onnx` ONNX, `.pb` a frozen
/// graph, a directory holding `saved_model.pb` a SavedModel.
pub fn detect_type(path: &Path) -> Option<ModelType> {
    if path.is_dir() {
        return path
            .join("saved_model.pb")
            .is_file()
            .then_some(ModelType::TensorFlowSaved);
    }
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "pmml" | "xml" => Some(ModelType::Pmml),
        "onnx" => Some(ModelType::Onnx),
        "pb" => Some(ModelType::TensorFlow),
        _ => None,
    }
}

/// The largest model file read: 2 GiB, protobuf's own limit for one message
/// (ONNX models, frozen graphs, `saved_model.pb`).
pub(crate) const MAX_FILE_BYTES: u64 = (2 << 30) - 1;

/// Reads a whole file of at most [`MAX_FILE_BYTES`], with a typed error.
#[cfg_attr(not(any(feature = "tensorflow", feature = "onnx")), allow(dead_code))]
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, ModelError> {
    read_file_limited(path, MAX_FILE_BYTES)
}

/// Reads a whole file of at most `limit` bytes: the size is checked before
/// anything is read, so an oversized file costs no memory, and a device or a
/// pipe (whose size reads 0) is read at most one byte past the limit.
pub(crate) fn read_file_limited(path: &Path, limit: u64) -> Result<Vec<u8>, ModelError> {
    let size = std::fs::metadata(path)
        .map_err(|e| ModelError::io(path, e))?
        .len();
    if size > limit {
        return Err(ModelError::TooLarge {
            path: path.to_path_buf(),
            size,
            limit,
        });
    }
    // The size above is 0 for a device or a pipe: read at most one byte past the limit.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit.saturating_add(1)).read_to_end(&mut bytes))
        .map_err(|e| ModelError::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(ModelError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FieldDesc;
    use crate::record::{Record, Value};
    use crate::score::Score;

    #[cfg(unix)]
    #[test]
    fn a_device_without_end_is_read_only_up_to_the_limit() {
        let err = read_file_limited(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(matches!(err, ModelError::TooLarge { .. }), "{err}");
    }

    #[derive(Debug)]
    struct Echo(Vec<u8>);

    impl Model for Echo {
        fn model_type(&self) -> ModelType {
            ModelType::Other(42)
        }
        fn inputs(&self) -> &[FieldDesc] {
            &[]
        }
        fn outputs(&self) -> &[FieldDesc] {
            &[]
        }
        fn score(&self, record: &Record) -> Result<Score, ModelError> {
            Ok(Score {
                value: Value::Number(record.len() as f64 + self.0.len() as f64),
                outputs: vec![],
            })
        }
        fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
            Ok(self.0.clone())
        }
    }

    struct EchoFactory;

    impl ModelFactory for EchoFactory {
        fn create(
            &self,
            source: ModelSource<'_>,
            _: &LoadOptions,
        ) -> Result<Box<dyn Model>, ModelError> {
            match source {
                ModelSource::Bytes(b) => Ok(Box::new(Echo(b.to_vec()))),
                ModelSource::Path(p) => Ok(Box::new(Echo(read_file(p)?))),
            }
        }
    }

    fn descriptor(t: i32, content: Option<MessageContent>) -> ModelDescriptor {
        ModelDescriptor {
            name: "m".into(),
            modeltype: t,
            message_content: content,
            ..Default::default()
        }
    }

    #[test]
    fn oversized_files_are_refused_before_reading() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("big.pmml");
        // A sparse file: its length is what counts, no disk is used.
        std::fs::File::create(&path)?.set_len(1025)?;
        match read_file_limited(&path, 1024) {
            Err(ModelError::TooLarge { size, limit, .. }) => {
                assert_eq!((size, limit), (1025, 1024));
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert_eq!(read_file_limited(&path, 1025)?.len(), 1025);
        Ok(())
    }

    #[test]
    fn unknown_type_is_typed_error() {
        let r = ModelRegistry::with_defaults();
        let d = descriptor(42, Some(MessageContent::Data(vec![1])));
        assert!(matches!(
            r.from_descriptor(&d, &LoadOptions::default()),
            Err(ModelError::UnknownModelType(42))
        ));
    }

    #[test]
    fn pmml_loads_through_the_registry_and_bad_pmml_is_a_typed_error() {
        let r = ModelRegistry::with_defaults();
        let bad = descriptor(2, Some(MessageContent::Data(b"<PMML/>".to_vec())));
        assert!(matches!(
            r.from_descriptor(&bad, &LoadOptions::default()),
            Err(ModelError::InvalidModel {
                model_type: ModelType::Pmml,
                ..
            })
        ));
        let pmml = br#"<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">
  <Header/>
  <DataDictionary>
    <DataField name="x" optype="continuous" dataType="double"/>
    <DataField name="y" optype="continuous" dataType="double"/>
  </DataDictionary>
  <RegressionModel functionName="regression">
    <MiningSchema>
      <MiningField name="x"/>
      <MiningField name="y" usageType="target"/>
    </MiningSchema>
    <RegressionTable intercept="1.5">
      <NumericPredictor name="x" coefficient="2"/>
    </RegressionTable>
  </RegressionModel>
</PMML>"#;
        let good = descriptor(2, Some(MessageContent::Data(pmml.to_vec())));
        let model = r
            .from_descriptor(&good, &LoadOptions::default())
            .expect("a valid PMML regression loads");
        let score = model
            .score(&Record::new().with("x", Value::Number(4.0)))
            .expect("scores");
        assert_eq!(score.value, Value::Number(1.5 + 2.0 * 4.0));
        assert_eq!(
            score.output("y"),
            Some(&crate::score::OutputValue::Number(9.5))
        );
        // Restoring from to_bytes gives the same model.
        let again = r
            .restore(ModelType::Pmml, &model.to_bytes().expect("bytes"))
            .expect("restores");
        assert_eq!(
            again
                .score(&Record::new().with("x", Value::Number(-1.0)))
                .expect("scores")
                .value,
            Value::Number(-0.5)
        );
    }

    #[test]
    fn user_factories_and_locations() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("m.bin"), b"abc").expect("write");
        let mut r = ModelRegistry::new();
        assert!(r
            .register(ModelType::Other(42), Arc::new(EchoFactory))
            .is_none());

        let by_value = descriptor(42, Some(MessageContent::Data(vec![1, 2])));
        let m = r
            .from_descriptor(&by_value, &LoadOptions::default())
            .expect("create");
        let s = m.score(&Record::new().with("a", 1.0)).expect("score");
        assert_eq!(s.value, Value::Number(3.0));
        let restored = r
            .restore(ModelType::Other(42), &m.to_bytes().expect("bytes"))
            .expect("restore");
        assert_eq!(restored.to_bytes().expect("bytes"), vec![1, 2]);

        let by_ref = descriptor(42, Some(MessageContent::Location("m.bin".into())));
        assert!(matches!(
            r.from_descriptor(&by_ref, &LoadOptions::default()),
            Err(ModelError::NoModelsDir(_))
        ));
        r.set_models_dir(ModelsDir::new(tmp.path()).expect("dir"));
        let m = r
            .from_descriptor(&by_ref, &LoadOptions::default())
            .expect("by location");
        assert_eq!(m.to_bytes().expect("bytes"), b"abc");

        let escape = descriptor(42, Some(MessageContent::Location("../m.bin".into())));
        assert!(matches!(
            r.from_descriptor(&escape, &LoadOptions::default()),
            Err(ModelError::InvalidLocation { .. })
        ));
        let empty = descriptor(42, None);
        assert!(matches!(
            r.from_descriptor(&empty, &LoadOptions::default()),
            Err(ModelError::EmptyDescriptor(_))
        ));
        assert!(matches!(
            r.factory(ModelType::Onnx),
            Err(ModelError::NoFactory(ModelType::Onnx))
        ));
    }

    #[cfg(not(feature = "onnx"))]
    #[test]
    fn disabled_formats_are_typed_errors() {
        let r = ModelRegistry::with_defaults();
        assert!(matches!(
            r.restore(ModelType::Onnx, b"x"),
            Err(ModelError::FeatureDisabled {
                feature: "onnx",
                ..
            })
        ));
    }

    #[test]
    fn model_type_wire_and_names() {
        for t in [
            ModelType::TensorFlow,
            ModelType::TensorFlowSaved,
            ModelType::Pmml,
            ModelType::Onnx,
            ModelType::Other(9),
        ] {
            assert_eq!(ModelType::from_wire(t.to_wire()), t);
            if !matches!(t, ModelType::Other(_)) {
                assert_eq!(ModelType::from_name(&t.to_string()), Some(t));
            }
        }
        assert_eq!(ModelType::from_name("nope"), None);
    }

    #[test]
    fn detects_types_by_extension() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert_eq!(detect_type(Path::new("a/b.PMML")), Some(ModelType::Pmml));
        assert_eq!(detect_type(Path::new("a/b.onnx")), Some(ModelType::Onnx));
        assert_eq!(detect_type(Path::new("b.pb")), Some(ModelType::TensorFlow));
        assert_eq!(detect_type(tmp.path()), None);
        std::fs::write(tmp.path().join("saved_model.pb"), b"").expect("write");
        assert_eq!(detect_type(tmp.path()), Some(ModelType::TensorFlowSaved));
        assert_eq!(detect_type(Path::new("x.csv")), None);
    }
}
