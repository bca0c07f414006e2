//! The object-storage sink (feature `object-store`): S3 (and S3-compatible
//! stores), Google Cloud Storage, Azure Blob Storage and local files through the
//! [`object_store`] crate, so the sync lands where Snowflake's external stages and
//! Snowpipe, and BigQuery's load jobs and external tables, read.
//!
//! Each object is uploaded whole: a small one with one `PUT`, a large one as a
//! multipart upload completed on commit. Either way it becomes visible only when
//! complete, under its final name, so the manifest-last rule holds: a bucket
//! notification on `_runs/` (Snowpipe's auto-ingest, a BigQuery transfer) sees a
//! run only once every file of it is there. An object dropped without a commit
//! leaves at most an unfinished multipart upload, which the store never shows (an
//! S3 lifecycle rule, `AbortIncompleteMultipartUpload`, clears them).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::ObjectStore;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use tokio::io::AsyncWriteExt as _;

use crate::{Sink, SinkError, SinkObject};

/// A sink under a prefix of an object store.
#[derive(Debug, Clone)]
pub struct ObjectStoreSink {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
}

impl ObjectStoreSink {
    /// A sink over `store`, every object under `prefix` (`""`: the root).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Result<ObjectStoreSink, SinkError> {
        let prefix = Path::parse(prefix)
            .map_err(|e| SinkError::with_source(format!("prefix {prefix:?}"), e))?;
        Ok(ObjectStoreSink {
            url: format!("{store}/{prefix}"),
            store,
            prefix,
        })
    }

    /// A sink at a URL: `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix` (or `abfss://…`), `file:///dir`. `options` are the
    /// store's settings by `object_store`'s names (`aws_access_key_id`,
    /// `aws_region`, `aws_endpoint`, `aws_allow_http`, `google_service_account`,
    /// `azure_storage_account_name`, …); see [`options_from_env`] for taking them
    /// from the process's `AWS_*`, `GOOGLE_*` and `AZURE_*` variables.
    pub fn from_url<I, K, V>(url: &str, options: I) -> Result<ObjectStoreSink, SinkError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        let parsed =
            url::Url::parse(url).map_err(|e| SinkError::with_source(format!("URL {url:?}"), e))?;
        let (store, prefix) = object_store::parse_url_opts(&parsed, options)
            .map_err(|e| SinkError::with_source(format!("object store {url:?}"), e))?;
        Ok(ObjectStoreSink {
            store: Arc::from(store),
            prefix,
            url: url.to_owned(),
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn path(&self, path: &str) -> Result<Path, SinkError> {
        let relative = Path::parse(path)
            .map_err(|e| SinkError::with_source(format!("object path {path:?}"), e))?;
        if path.is_empty() || relative.parts().count() == 0 {
            return Err(SinkError::new(format!("object path {path:?} is empty")));
        }
        Ok(self.prefix.parts().chain(relative.parts()).collect())
    }
}

/// The object-store settings in the environment: every `AWS_*`, `GOOGLE_*` and
/// `AZURE_*` variable, by the lowercase names `object_store` takes.
pub fn options_from_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| {
            k.starts_with("AWS_") || k.starts_with("GOOGLE_") || k.starts_with("AZURE_")
        })
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect()
}

impl std::fmt::Display for ObjectStoreSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

#[async_trait]
impl Sink for ObjectStoreSink {
    async fn create(&self, path: &str) -> Result<Box<dyn SinkObject>, SinkError> {
        let location = self.path(path)?;
        Ok(Box::new(Upload {
            writer: Some(BufWriter::new(Arc::clone(&self.store), location.clone())),
            location,
        }))
    }

    async fn read(&self, path: &str) -> Result<Option<Bytes>, SinkError> {
        let location = self.path(path)?;
        match self.store.get(&location).await {
            Ok(got) => got
                .bytes()
                .await
                .map(Some)
                .map_err(|e| SinkError::with_source(format!("reading {location}"), e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(SinkError::with_source(format!("reading {location}"), e)),
        }
    }
}

struct Upload {
    writer: Option<BufWriter>,
    location: Path,
}

#[async_trait]
impl SinkObject for Upload {
    async fn write(&mut self, chunk: Bytes) -> Result<(), SinkError> {
        let Some(writer) = self.writer.as_mut() else {
            return Err(SinkError::new("write after commit"));
        };
        writer
            .put(chunk)
            .await
            .map_err(|e| SinkError::with_source(format!("uploading {}", self.location), e))
    }

    async fn commit(mut self: Box<Self>) -> Result<(), SinkError> {
        let Some(mut writer) = self.writer.take() else {
            return Err(SinkError::new("committed twice"));
        };
        if let Err(e) = writer.shutdown().await {
            let _ = writer.abort().await;
            return Err(SinkError::with_source(
                format!("completing {}", self.location),
                e,
            ));
        }
        Ok(())
    }
}
