package storage

import (
	"errors"
	"strings"

	"github.com/ClickHouse/ch-go"
	"github.com/ClickHouse/ch-go/proto"

	"github.com/meridianhq/meridian/pipeline"
	"github.com/meridianhq/meridian/storage/chdb"
)

// storeStateCodes are engine errors about the store, not the block: it is overloaded, out
// of memory or disk, read-only, restarting, or a table is missing until migrations run
// again. Retrying the same block can succeed, so they are never permanent.
var storeStateCodes = map[proto.Error]bool{
	proto.ErrUnknownTable: true, proto.ErrUnknownDatabase: true, proto.ErrTableIsDropped: true,
	proto.ErrTableIsBeingRestarted: true, proto.ErrTableIsReadOnly: true, proto.ErrReadonly: true,
	proto.ErrTimeoutExceeded: true, proto.ErrTooSlow: true, proto.ErrTooManySimultaneousQueries: true,
	proto.ErrServerOverloaded: true, proto.ErrMemoryLimitExceeded: true, proto.ErrCannotAllocateMemory: true,
	proto.ErrNotEnoughSpace: true, proto.ErrTooManyParts: true, proto.ErrDistributedTooManyPendingBytes: true,
	proto.ErrSocketTimeout: true, proto.ErrNetworkError: true, proto.ErrAllConnectionTriesFailed: true,
	proto.ErrAborted: true, proto.ErrQueryWasCancelled: true, proto.ErrQueryWasCancelledByClient: true,
	proto.ErrCannotScheduleTask: true, proto.ErrNoZookeeper: true, proto.ErrKeeperException: true,
	proto.ErrUnexpectedZookeeperError: true, proto.ErrReplicaIsNotInQuorum: true, proto.ErrNotALeader: true,
	proto.ErrUnfinished: true, proto.ErrAuthenticationFailed: true, proto.ErrAccessDenied: true,
	proto.ErrUnknownUser: true, proto.ErrWrongPassword: true, proto.ErrRequiredPassword: true,
}

// insertError marks err permanent (pipeline.Permanent) when the engine refused the block
// itself, for good: its columns do not fit the table, a constraint rejects a row, its
// bytes are not a Native block. Transport failures (no exception from the engine at all)
// and store-state errors stay retryable.
func insertError(err error) error {
	code, msg, ok := engineCode(err)
	if !ok || code == 0 {
		return err // a transport failure, or no verdict from the engine: retry
	}
	// TOO_MANY_PARTS also names a block spanning too many partitions, which no retry fixes.
	if storeStateCodes[code] && !(code == proto.ErrTooManyParts && strings.Contains(msg, "for single INSERT block")) {
		return err
	}
	return pipeline.Permanent(err)
}

// engineCode is the ClickHouse error code of an exception raised by either driver's engine.
func engineCode(err error) (proto.Error, string, bool) {
	var ce *chdb.Error
	if errors.As(err, &ce) {
		return proto.Error(ce.Code), ce.Msg, true
	}
	if ex, ok := ch.AsException(err); ok {
		return ex.Code, ex.Message, true
	}
	return 0, "", false
}
