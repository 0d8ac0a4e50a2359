// Package tracing sets the global OpenTelemetry tracer provider: OTLP over HTTP when an
// endpoint is configured, otherwise the default no-op provider, so spans cost nothing.
package tracing

import (
	"context"
	"flag"
	"fmt"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
)

// Config selects where spans go.
type Config struct {
	OTLPEndpoint string  `yaml:"otlp_endpoint"`
	Insecure     bool    `yaml:"insecure"`
	SampleRatio  float64 `yaml:"sample_ratio"`
}

// RegisterFlags registers the tracing flags.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.StringVar(&c.OTLPEndpoint, "tracing.otlp-endpoint", "", "OTLP/HTTP collector host:port for traces; empty disables tracing.")
	f.BoolVar(&c.Insecure, "tracing.insecure", false, "Send traces over plain HTTP.")
	f.Float64Var(&c.SampleRatio, "tracing.sample-ratio", 0.01, "Fraction of pipeline batches traced.")
}

// Setup installs the tracer provider and returns its shutdown function.
func Setup(ctx context.Context, c Config, version string) (func(context.Context) error, error) {
	if c.OTLPEndpoint == "" {
		return func(context.Context) error { return nil }, nil
	}
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(c.OTLPEndpoint)}
	if c.Insecure {
		opts = append(opts, otlptracehttp.WithInsecure())
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	res := resource.NewSchemaless(semconv.ServiceName("meridian"), semconv.ServiceVersion(version))
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(c.SampleRatio))),
	)
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}
