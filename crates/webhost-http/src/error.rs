use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use webhost_domain::ValidationError;
use webhost_storage::{Conflict, StorageError};

/// The one error response of the API: `{"error": {"code", "message"}}` with
/// a 4xx that says what to fix, or an opaque 500 whose cause goes to the log.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The input field at fault, when there is one.
    pub field: Option<&'static str>,
    /// Extra headers (`retry-after`).
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after_secs: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn too_many_requests(retry_after_secs: u64, message: impl Into<String>) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// A 500: the cause chain is logged here, the body says nothing of it.
    pub fn unexpected(err: anyhow::Error) -> Self {
        tracing::error!(error = format!("{err:#}"), "unexpected error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "something went wrong on our side; it has been logged",
        )
    }
}

impl From<ValidationError> for ApiError {
    fn from(err: ValidationError) -> Self {
        Self {
            field: Some(err.field),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                err.to_string(),
            )
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::NotFound(what) => Self::not_found(what),
            StorageError::Conflict(conflict) => conflict.into(),
            StorageError::Unexpected(err) => Self::unexpected(err),
        }
    }
}

impl From<Conflict> for ApiError {
    fn from(conflict: Conflict) -> Self {
        let message = conflict.to_string();
        match conflict {
            Conflict::EmailTaken => Self {
                field: Some("email"),
                ..Self::conflict("email_taken", message)
            },
            Conflict::DeviceTaken(_) => Self {
                field: Some("device_id"),
                ..Self::conflict("device_id_taken", message)
            },
            Conflict::VehicleLimit { .. } => Self::new(
                StatusCode::PAYMENT_REQUIRED,
                "vehicle_limit_reached",
                format!("{message}; upgrade the plan or delete a vehicle"),
            ),
            Conflict::CellNameTaken(_) => Self::conflict("cell_name_taken", message),
            Conflict::Job(_) => Self::conflict("job_state", message),
            Conflict::MoveInProgress(_) => Self::conflict("move_in_progress", message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(field) = self.field {
            error["field"] = json!(field);
        }
        let mut response = (self.status, axum::Json(json!({ "error": error }))).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}
