//! Start-up and shutdown of `inferd serve`.
//!
//! Start: load ONNX Runtime (a missing library stops start-up), bind the
//! listener, then load the models on a blocking thread while liveness already
//! answers; readiness turns true once they are in. Shutdown, on the signal:
//! readiness turns false, the listener closes, in-flight requests get up to
//! the exit timeout to finish, then every model's queue is closed and its
//! instance threads are joined.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use tonic::transport::server::TcpIncoming;

use crate::cli::ServerConfig;
use crate::grpc::{self, GrpcInferenceServiceServer};
use crate::http::{AppState, app};
use crate::metrics::Metrics;
use crate::model::Registry;
use crate::model::lifecycle::{self, ControlMode, ModelManager};

pub struct Server {
    listener: TcpListener,
    grpc_listener: TcpListener,
    /// `None` when metrics are turned off.
    metrics_listener: Option<TcpListener>,
    state: Arc<AppState>,
    config: ServerConfig,
}

impl Server {
    /// Loads ONNX Runtime and binds the HTTP listener; models load in [`Server::serve`].
    pub async fn bind(config: ServerConfig) -> anyhow::Result<Server> {
        crate::engine::runtime::environment()?;
        if let Some(dir) = &config.model_repository {
            anyhow::ensure!(
                dir.is_dir(),
                "model repository {} is not a readable folder",
                dir.display()
            );
        }
        let listener = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.http_addr))?;
        let grpc_listener = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.grpc_addr))?;
        let metrics_listener = match config.metrics_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?,
            ),
            None => None,
        };
        let state = Arc::new(AppState::new(config.http.clone()));
        Ok(Server { listener, grpc_listener, metrics_listener, state, config })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_listener.local_addr().expect("a bound listener has an address")
    }

    /// The metrics endpoint's address, when metrics are on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .map(|l| l.local_addr().expect("a bound listener has an address"))
    }

    pub fn state(&self) -> Arc<AppState> {
        Arc::clone(&self.state)
    }

    /// Serves until `shutdown` completes, then drains and stops.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Server { listener, grpc_listener, metrics_listener, state, config } = self;
        tracing::info!(addr = %listener.local_addr()?, "http endpoint listening");
        tracing::info!(addr = %grpc_listener.local_addr()?, "grpc endpoint listening");
        let metrics = match &metrics_listener {
            Some(l) => {
                tracing::info!(addr = %l.local_addr()?, "metrics endpoint listening");
                Some(Arc::new(Metrics::new(Arc::clone(&state)).context("cannot set up metrics")?))
            }
            None => None,
        };

        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
        let manager = ModelManager::new(
            Arc::clone(&state),
            config.model_repository.clone(),
            config.model_name.clone(),
            config.load.clone(),
            config.control_mode,
        );
        state.manager.store(Some(Arc::clone(&manager)));
        let loader = {
            let (state, config, health) = (Arc::clone(&state), config.clone(), health.clone());
            let manager = Arc::clone(&manager);
            tokio::spawn(async move {
                load_models(&state, &manager, &config).await;
                if config.control_mode == ControlMode::Poll {
                    let interval = config.poll_interval;
                    tokio::spawn(lifecycle::poll(
                        Arc::clone(&manager),
                        interval,
                        Arc::clone(&state),
                    ));
                }
                if state.is_ready() {
                    health.set_serving::<GrpcInferenceServiceServer<grpc::Service>>().await;
                    health.set_service_status("", tonic_health::ServingStatus::Serving).await;
                }
            })
        };

        // One signal drains both front ends.
        let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
        let draining = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|draining| *draining).await;
        };
        {
            let (state, health) = (Arc::clone(&state), health.clone());
            tokio::spawn(async move {
                shutdown.await;
                state.begin_drain();
                health.set_not_serving::<GrpcInferenceServiceServer<grpc::Service>>().await;
                health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
                tracing::info!("shutting down: readiness false, draining in-flight requests");
                let _ = drain_tx.send(true);
            });
        }
        let http = axum::serve(listener, app(Arc::clone(&state)))
            .with_graceful_shutdown(draining(drain_rx.clone()));
        let limit = config.http.max_request_bytes;
        let inference = GrpcInferenceServiceServer::new(grpc::Service::new(Arc::clone(&state)))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(usize::MAX);
        let grpc = tonic::transport::Server::builder()
            .layer(tower::util::MapResponseLayer::new(
                grpc::oversize_is_resource_exhausted::<tonic::body::Body>,
            ))
            .add_service(health_service)
            .add_service(inference)
            .serve_with_incoming_shutdown(
                TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
                draining(drain_rx.clone()),
            );
        let metrics = async {
            match (metrics_listener, metrics) {
                (Some(listener), Some(metrics)) => {
                    axum::serve(listener, crate::metrics::app(metrics))
                        .with_graceful_shutdown(draining(drain_rx.clone()))
                        .await
                        .context("metrics server failed")
                }
                _ => Ok(()),
            }
        };
        let both = async {
            let (http, grpc, metrics) = tokio::join!(http, grpc, metrics);
            http.context("http server failed")?;
            metrics?;
            grpc.context("grpc server failed")
        };
        let mut deadline_rx = drain_rx.clone();
        let drain_deadline = async move {
            let _ = deadline_rx.wait_for(|draining| *draining).await;
            tokio::time::sleep(config.exit_timeout).await;
        };
        tokio::select! {
            result = both => result?,
            () = drain_deadline => {
                tracing::warn!(timeout_secs = config.exit_timeout.as_secs(), "exit timeout reached with requests in flight");
            }
        }

        // A load still running would otherwise swap its models in after the
        // registry is emptied.
        let _ = loader.await;
        // The manager holds the state; letting go of it ends that cycle.
        state.manager.store(None);
        let registry = state.registry.swap(Arc::new(Registry::default()));
        tokio::task::spawn_blocking(move || drop(registry)).await?;
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// Loads the models at start as the control mode says, then reports.
async fn load_models(state: &AppState, manager: &ModelManager, config: &ServerConfig) {
    manager.load_initial(&config.load_models).await;
    let registry = state.registry.load();
    let failed: Vec<&str> =
        registry.iter().filter(|(_, e)| !e.is_ready()).map(|(n, _)| n.as_str()).collect();
    if !failed.is_empty() {
        tracing::warn!(models = ?failed, "some models failed to load and are not served");
    }
    drop(registry);
    state.mark_loaded();
    tracing::info!(ready = state.is_ready(), mode = ?manager.mode(), "models loaded");
}

/// Completes on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = match tokio::signal::unix::signal(
        tokio::signal::unix::SignalKind::terminate(),
    ) {
        Ok(signal) => signal,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the server");
            let _ = interrupt.await;
            return;
        }
    };
    tokio::select! {
        _ = interrupt => tracing::info!(signal = "SIGINT", "signal received"),
        _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "signal received"),
    }
}
