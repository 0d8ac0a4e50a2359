package pipeline

import "context"

// Appender is what collectors write records to. Append blocks while the pipeline applies
// backpressure (its spool is full) and returns ctx's error if the caller gives up; the
// records are accepted once Append returns nil.
type Appender interface {
	Append(ctx context.Context, recs ...Record) error
}

// AppenderFunc adapts a function to Appender.
type AppenderFunc func(ctx context.Context, recs ...Record) error

func (f AppenderFunc) Append(ctx context.Context, recs ...Record) error { return f(ctx, recs...) }

// Block is one batch of records of one kind, encoded once as a ClickHouse Native block and
// sent as is by either storage driver. Token deduplicates retries of the same block.
type Block struct {
	Kind   Kind
	Rows   int
	Token  string
	Native []byte
}

// Encoder builds Native block bodies. The pipeline opens one block per kind and adds
// records to it as they arrive, so a batch waiting to be sealed holds its columns, not
// its records.
type Encoder interface {
	Open(kind Kind) OpenBlock
}

// OpenBlock is a block being built from records of one kind.
type OpenBlock interface {
	// Add appends recs. When a record cannot be encoded, none of recs is appended and
	// Add returns the record's index and why.
	Add(recs []Record) (int, error)
	Rows() int
	// Seal returns the Native block body of the records added and empties the block.
	Seal() ([]byte, error)
}

// Inserter stores a block. Inserting the same Token twice must store the rows once.
type Inserter interface {
	Insert(ctx context.Context, b Block) error
}

// Consumer receives accepted records for live use (map, SLI series, steering). Consume
// must not block for long: the pipeline gives each consumer its own bounded queue and
// counts what a slow consumer drops instead of stalling the writer or other consumers.
type Consumer interface {
	Consume(recs []Record)
}

// ConsumerFunc adapts a function to Consumer.
type ConsumerFunc func(recs []Record)

func (f ConsumerFunc) Consume(recs []Record) { f(recs) }
