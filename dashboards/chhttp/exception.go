package chhttp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
)

// ClickHouse error codes the endpoint reports itself (src/Common/ErrorCodes.cpp).
const (
	codeBadArguments         = 36
	codeNotImplemented       = 48
	codeSyntaxError          = 62
	codeTimeoutExceeded      = 159
	codeReadonly             = 164
	codeTooManyQueries       = 202
	codeRequiredPassword     = 194
	codeQueryIsTooLarge      = 229
	codeUnknownQueryParam    = 456
	codeAccessDenied         = 497
	codeAuthenticationFailed = 516
	codeSTDException         = 1001
)

// readonlyUser is how refusals name the user, as ClickHouse prefixes READONLY errors with
// the user name.
const readonlyUser = "readonly"

// Exception is an error in ClickHouse's own shape: the HTTP interface sends Text as the
// body and Code in X-ClickHouse-Exception-Code, and clients (clickhouse-go) parse both.
type Exception struct {
	Code int
	Text string // "Code: N. DB::Exception: ..."
}

func (e *Exception) Error() string { return e.Text }

var codeNames = map[int]string{
	codeBadArguments:         "BAD_ARGUMENTS",
	codeNotImplemented:       "NOT_IMPLEMENTED",
	codeSyntaxError:          "SYNTAX_ERROR",
	codeTimeoutExceeded:      "TIMEOUT_EXCEEDED",
	codeReadonly:             "READONLY",
	codeTooManyQueries:       "TOO_MANY_SIMULTANEOUS_QUERIES",
	codeRequiredPassword:     "REQUIRED_PASSWORD",
	codeQueryIsTooLarge:      "QUERY_IS_TOO_LARGE",
	codeUnknownQueryParam:    "UNKNOWN_QUERY_PARAMETER",
	codeAccessDenied:         "ACCESS_DENIED",
	codeAuthenticationFailed: "AUTHENTICATION_FAILED",
	codeSTDException:         "STD_EXCEPTION",
}

func exception(code int, format string, args ...any) *Exception {
	return &Exception{Code: code, Text: fmt.Sprintf("Code: %d. DB::Exception: %s. (%s)", code, fmt.Sprintf(format, args...), codeNames[code])}
}

var engineCode = regexp.MustCompile(`Code: (\d+)\. `)

// engineException turns an error from the engine into an Exception, keeping the engine's
// own text from its "Code: N." on; errors without one (the context ended, the store
// failed) get the code ClickHouse would use.
func engineException(err error) *Exception {
	var ex *Exception
	if errors.As(err, &ex) {
		return ex
	}
	msg := err.Error()
	if m := engineCode.FindStringSubmatchIndex(msg); m != nil {
		code, _ := strconv.Atoi(msg[m[2]:m[3]])
		return &Exception{Code: code, Text: scrubPaths(strings.TrimSpace(msg[m[0]:]))}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return exception(codeTimeoutExceeded, "Timeout exceeded: %v", err)
	}
	return exception(codeSTDException, "%s", scrubPaths(err.Error()))
}

// hostPath is an absolute path in an engine message: a '/' that starts a word (after a
// quote, a space, '(' or the like; a division "a/b" is not one) and what follows it.
var hostPath = regexp.MustCompile("(^|[\\s'\"`(\\[=:,])/[^\\s'\"`(),\\[\\]]+")

// scrubPaths replaces host paths in an engine message with "<path>": they tell a client
// where the data lives and, with a file name of its choosing, whether a file exists.
func scrubPaths(msg string) string {
	return hostPath.ReplaceAllString(msg, "$1<path>")
}

// httpStatus maps an error code to the HTTP status ClickHouse's HTTP handler sends for it
// (HTTPHandler's exceptionCodeToHTTPStatus); everything else is 500.
func httpStatus(code int) int {
	switch code {
	case codeRequiredPassword:
		return http.StatusUnauthorized
	case codeAuthenticationFailed, 192 /* UNKNOWN_USER */, 193 /* WRONG_PASSWORD */ :
		return http.StatusForbidden
	// CANNOT_PARSE_*, THERE_IS_NO_COLUMN, DUPLICATE_COLUMN, BAD_ARGUMENTS, ILLEGAL_COLUMN,
	// TYPE_MISMATCH, SYNTAX_ERROR, INCORRECT_DATA, VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
	case 6, 8, 15, 25, 26, 27, 36, 38, 41, 44, 53, 62, 72, 117, 321, 376, 675, 676:
		return http.StatusBadRequest
	// UNKNOWN_FUNCTION, _IDENTIFIER, _TYPE, _STORAGE, _TABLE, _AGGREGATE_FUNCTION, _FORMAT,
	// _TYPE_OF_QUERY, _DATABASE, _SETTING
	case 46, 47, 50, 56, 60, 63, 73, 78, 81, 115:
		return http.StatusNotFound
	case codeQueryIsTooLarge:
		return http.StatusRequestEntityTooLarge
	case codeNotImplemented:
		return http.StatusNotImplemented
	case codeTimeoutExceeded:
		return http.StatusRequestTimeout
	case 76, 209: // CANNOT_OPEN_FILE, SOCKET_TIMEOUT
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}
