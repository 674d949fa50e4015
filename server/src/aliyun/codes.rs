//! The error-code table shared by both APIs.

/// A numeric Aliyun error code from the documents' shared table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AliyunCode {
    /// 0, HTTP 200.
    Success,
    /// 23500000, HTTP 500.
    InternalError,
    /// 23500001, HTTP 401.
    AuthorizationRequired,
    /// 23500002, HTTP 404.
    ServiceNotFound,
    /// 23500003, HTTP 403.
    CreditExhausted,
    /// 23500004, HTTP 403.
    Throttled,
    /// 23500005, HTTP 403.
    ContentRejected,
    /// 23500006, HTTP 400.
    ImageUrlInvalid,
    /// 23500007, HTTP 400.
    ImageInvalid,
    /// 23500008, HTTP 400.
    ResultKeyNotFound,
    /// 23500009, HTTP 400.
    ParameterEmpty,
    /// 23500011, HTTP 500.
    JobFailed,
    /// 23500012, HTTP 400.
    BodyMissing,
    /// 23500013, HTTP 400.
    ParameterIllegal,
    /// 23500014, HTTP 400.
    ServiceNameIllegal,
}

impl AliyunCode {
    /// Every code of the table, in numeric order.
    pub const ALL: [AliyunCode; 15] = [
        AliyunCode::Success,
        AliyunCode::InternalError,
        AliyunCode::AuthorizationRequired,
        AliyunCode::ServiceNotFound,
        AliyunCode::CreditExhausted,
        AliyunCode::Throttled,
        AliyunCode::ContentRejected,
        AliyunCode::ImageUrlInvalid,
        AliyunCode::ImageInvalid,
        AliyunCode::ResultKeyNotFound,
        AliyunCode::ParameterEmpty,
        AliyunCode::JobFailed,
        AliyunCode::BodyMissing,
        AliyunCode::ParameterIllegal,
        AliyunCode::ServiceNameIllegal,
    ];

    /// The numeric code.
    pub fn code(self) -> i64 {
        match self {
            AliyunCode::Success => 0,
            AliyunCode::InternalError => 23500000,
            AliyunCode::AuthorizationRequired => 23500001,
            AliyunCode::ServiceNotFound => 23500002,
            AliyunCode::CreditExhausted => 23500003,
            AliyunCode::Throttled => 23500004,
            AliyunCode::ContentRejected => 23500005,
            AliyunCode::ImageUrlInvalid => 23500006,
            AliyunCode::ImageInvalid => 23500007,
            AliyunCode::ResultKeyNotFound => 23500008,
            AliyunCode::ParameterEmpty => 23500009,
            AliyunCode::JobFailed => 23500011,
            AliyunCode::BodyMissing => 23500012,
            AliyunCode::ParameterIllegal => 23500013,
            AliyunCode::ServiceNameIllegal => 23500014,
        }
    }

    /// The code for a number, if it is in the table.
    pub fn from_code(code: i64) -> Option<AliyunCode> {
        AliyunCode::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The HTTP status the documents pair with the code.
    pub fn http_status(self) -> u16 {
        match self {
            AliyunCode::Success => 200,
            AliyunCode::InternalError | AliyunCode::JobFailed => 500,
            AliyunCode::AuthorizationRequired => 401,
            AliyunCode::ServiceNotFound => 404,
            AliyunCode::CreditExhausted | AliyunCode::Throttled | AliyunCode::ContentRejected => {
                403
            }
            AliyunCode::ImageUrlInvalid
            | AliyunCode::ImageInvalid
            | AliyunCode::ResultKeyNotFound
            | AliyunCode::ParameterEmpty
            | AliyunCode::BodyMissing
            | AliyunCode::ParameterIllegal
            | AliyunCode::ServiceNameIllegal => 400,
        }
    }

    /// The message the documents give for the code.
    pub fn message(self) -> &'static str {
        match self {
            AliyunCode::Success => "success",
            AliyunCode::InternalError => "Internal server error",
            AliyunCode::AuthorizationRequired => {
                "Authorization required to perform current operation"
            }
            AliyunCode::ServiceNotFound => "Specified service does not exist",
            AliyunCode::CreditExhausted => "User credit points are exhausted",
            AliyunCode::Throttled => "Request was denied due to request throttling",
            AliyunCode::ContentRejected => "The image did not pass the content compliance check",
            AliyunCode::ImageUrlInvalid => "The image url provided is invalid or non-accessible",
            AliyunCode::ImageInvalid => "The uploaded image does not meet the requirements",
            AliyunCode::ResultKeyNotFound => {
                "No records found related to the specified resultKey parameter"
            }
            AliyunCode::ParameterEmpty => "Required parameters cannot be empty",
            AliyunCode::JobFailed => "Job execution failed",
            AliyunCode::BodyMissing => "Required request body is missing",
            AliyunCode::ParameterIllegal => "Illegal input parameter found",
            AliyunCode::ServiceNameIllegal => "Illegal service name",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_match_the_documented_table() {
        for code in AliyunCode::ALL {
            assert_eq!(AliyunCode::from_code(code.code()), Some(code));
        }
        assert_eq!(AliyunCode::from_code(23500010), None);
        assert_eq!(AliyunCode::Throttled.http_status(), 403);
        assert_eq!(AliyunCode::ResultKeyNotFound.http_status(), 400);
        assert_eq!(AliyunCode::JobFailed.http_status(), 500);
    }
}
