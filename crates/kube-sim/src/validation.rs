//! The part of kube-apiserver's validation a client of the simulator can run into: objects
//! the real server refuses with 422 Invalid are refused here with the same Status.

use crate::errors::ApiError;
use crate::resources::ResourceDef;
use serde_json::Value;

/// Validates an object about to be created.
pub fn validate(res: &ResourceDef, obj: &Value) -> Result<(), ApiError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    if res.storage == "pods"
        && obj["spec"]["containers"]
            .as_array()
            .is_none_or(Vec::is_empty)
    {
        return Err(ApiError::invalid(
            res,
            name,
            "spec.containers",
            "Required value",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::PODS;

    #[test]
    fn a_pod_without_containers_is_invalid_like_on_the_real_server() {
        let e = validate(
            &PODS,
            &serde_json::json!({"metadata": {"name": "bad"}, "spec": {}}),
        );
        assert_eq!(
            e.map_err(|e| e.to_json()).err().unwrap_or_default(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Pod \"bad\" is invalid: spec.containers: Required value","reason":"Invalid","details":{"name":"bad","kind":"Pod","causes":[{"reason":"FieldValueRequired","message":"Required value","field":"spec.containers"}]},"code":422}"#
        );
    }
}
