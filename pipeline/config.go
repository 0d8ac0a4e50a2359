package pipeline

import (
	"flag"
	"fmt"
	"time"

	"github.com/grafana/dskit/backoff"
	"github.com/grafana/dskit/flagext"

	"github.com/meridianhq/meridian/internal/configcheck"
)

// Config configures batching, retries, the disk spool and the consumer queues.
type Config struct {
	// Instance names this process in deduplication tokens so that two replicas never
	// produce the same token. Empty: the host name.
	Instance          string        `yaml:"instance"`
	BatchRows         int           `yaml:"batch_rows"`
	BatchAge          time.Duration `yaml:"batch_age"`
	QueueSize         int           `yaml:"queue_size"`
	ConsumerQueueSize int           `yaml:"consumer_queue_size"`
	InsertTimeout     time.Duration `yaml:"insert_timeout"`
	Retry             RetryConfig   `yaml:"retry"`
	ShutdownTimeout   time.Duration `yaml:"shutdown_timeout"`
	// NotReadyAfter is how long one kind's inserts may keep failing before Health (and
	// /readyz) reports it: a blip of storage is retried quietly, an outage is not.
	NotReadyAfter time.Duration `yaml:"not_ready_after"`
	Spool         SpoolConfig   `yaml:"spool"`
}

// RetryConfig bounds the exponential, jittered backoff between insert attempts. A block is
// retried until it is stored, or until RejectAfter of its attempts failed with an error the
// Inserter marks Permanent (the store refuses the block itself).
type RetryConfig struct {
	MinBackoff  time.Duration `yaml:"min_backoff"`
	MaxBackoff  time.Duration `yaml:"max_backoff"`
	RejectAfter int           `yaml:"reject_after"`
}

func (c RetryConfig) backoff() backoff.Config {
	return backoff.Config{MinBackoff: c.MinBackoff, MaxBackoff: c.MaxBackoff}
}

// SpoolConfig configures the disk spool every block passes through before it is inserted.
type SpoolConfig struct {
	Path     string        `yaml:"path"`
	MaxBytes flagext.Bytes `yaml:"max_bytes"`
	Fsync    bool          `yaml:"fsync"`
}

// RegisterFlags registers the pipeline flags with prefix "pipeline." and sets defaults.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.StringVar(&c.Instance, "pipeline.instance", "", "Name of this instance in block deduplication tokens (default: the host name).")
	f.IntVar(&c.BatchRows, "pipeline.batch-rows", 200000, "Rows per block: a batch of one record kind is sealed when it has this many rows.")
	f.DurationVar(&c.BatchAge, "pipeline.batch-age", time.Second, "A non-empty batch is sealed at the latest this long after its first record.")
	f.IntVar(&c.QueueSize, "pipeline.queue-size", 50000, "Records queued per record kind ahead of batching; when the queue is full, Append blocks.")
	f.IntVar(&c.ConsumerQueueSize, "pipeline.consumer-queue-size", 1024, "Append calls buffered per consumer before that consumer's records are dropped.")
	f.DurationVar(&c.InsertTimeout, "pipeline.insert-timeout", 30*time.Second, "Timeout of one insert attempt.")
	f.DurationVar(&c.Retry.MinBackoff, "pipeline.retry.min-backoff", 100*time.Millisecond, "First delay before retrying a failed insert; it doubles up to the maximum, with jitter.")
	f.DurationVar(&c.Retry.MaxBackoff, "pipeline.retry.max-backoff", 30*time.Second, "Largest delay between insert retries.")
	f.IntVar(&c.Retry.RejectAfter, "pipeline.retry.reject-after", 3, "Attempts a block gets when the store refuses it for good (a permanent error, not a transport failure) before it is moved to the spool's rejected/ folder and its kind moves on.")
	f.DurationVar(&c.ShutdownTimeout, "pipeline.shutdown-timeout", 10*time.Second, "On stop, how long to keep inserting spooled blocks; what is left stays in the spool for the next start.")
	f.DurationVar(&c.NotReadyAfter, "pipeline.not-ready-after", time.Minute, "How long one record kind's inserts may keep failing, none succeeding, before /readyz reports not ready.")
	f.StringVar(&c.Spool.Path, "pipeline.spool.path", "./data/spool", "Directory of the disk spool holding blocks until they are stored.")
	c.Spool.MaxBytes = 1 << 30
	f.Var(&c.Spool.MaxBytes, "pipeline.spool.max-bytes", "Spool size limit; when it is full, Append blocks (backpressure).")
	f.BoolVar(&c.Spool.Fsync, "pipeline.spool.fsync", true, "fsync each spool file and the directory before a block counts as spooled (survives power loss, not only a process kill).")
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	if err := configcheck.First(
		configcheck.Positive("pipeline.batch_rows", c.BatchRows),
		configcheck.Positive("pipeline.batch_age", c.BatchAge),
		configcheck.Positive("pipeline.queue_size", c.QueueSize),
		configcheck.Positive("pipeline.consumer_queue_size", c.ConsumerQueueSize),
		configcheck.Positive("pipeline.insert_timeout", c.InsertTimeout),
		configcheck.Positive("pipeline.retry.min_backoff", c.Retry.MinBackoff),
	); err != nil {
		return err
	}
	if c.Retry.MaxBackoff < c.Retry.MinBackoff {
		return fmt.Errorf("pipeline.retry.max_backoff: %s is below min_backoff %s", c.Retry.MaxBackoff, c.Retry.MinBackoff)
	}
	return configcheck.First(
		configcheck.AtLeast("pipeline.retry.reject_after", c.Retry.RejectAfter, 1),
		configcheck.NotNegative("pipeline.not_ready_after", c.NotReadyAfter),
		configcheck.NotNegative("pipeline.shutdown_timeout", c.ShutdownTimeout),
		configcheck.Set("pipeline.spool.path", c.Spool.Path),
		configcheck.Positive("pipeline.spool.max_bytes", uint64(c.Spool.MaxBytes)),
	)
}
