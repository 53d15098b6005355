//! Errors of the ONNX crate: each names the file, the node or the attribute it is about.

use std::path::PathBuf;

/// What can go wrong reading or running an ONNX graph.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OnnxError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not an ONNX model (protobuf that does not decode, or no graph).
    #[error("not an ONNX model: {0}")]
    Decode(String),
    /// An operator this crate does not build; names the operator, the node and what is supported.
    #[error(
        "operator {op} (node {node:?}) is not supported; supported operators: {}",
        crate::SUPPORTED_OPS.join(", ")
    )]
    Unsupported {
        /// The operator (`domain::op_type` outside the default domain).
        op: String,
        /// The node's name (or its first output where it has none).
        node: String,
    },
    /// A node whose attributes or inputs this crate cannot honour (a mode, a rank, a dynamic
    /// value where a constant is needed).
    #[error("node {node:?} ({op}): {reason}")]
    Node {
        /// The node's name.
        node: String,
        /// Its operator.
        op: String,
        /// What is wrong.
        reason: String,
    },
    /// The graph as a whole: inputs, outputs, initializers.
    #[error("graph: {0}")]
    Graph(String),
    /// An error about the contents of a file, with the file's path.
    #[error("{path}: {error}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong in it.
        error: Box<OnnxError>,
    },
    /// The images given do not fit the graph's input.
    #[error("the model's input {input} is {expected}, the images are {got}")]
    InputShape {
        /// The graph input's name.
        input: String,
        /// The graph's declared shape (symbols for free dimensions).
        expected: String,
        /// The images' shape.
        got: String,
    },
}

impl OnnxError {
    /// The file's path in front of the message, where the error is about a file's contents.
    pub fn in_file(self, path: &std::path::Path) -> OnnxError {
        match self {
            OnnxError::Io { .. } | OnnxError::File { .. } => self,
            other => OnnxError::File {
                path: path.to_path_buf(),
                error: Box::new(other),
            },
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, OnnxError>;
