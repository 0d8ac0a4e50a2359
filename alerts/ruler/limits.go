package ruler

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
)

// Query limits are checked before any work that can grow with the query: the length
// before parsing (PromQL's parse time grows with the square of the nesting depth), the
// subquery steps before evaluation (the engine allocates its per-step arrays for every
// step of a subquery before the samples limit can apply, so vector(1)[1y:1ms] would
// ask for 3×10¹⁰ of them). Timeout, concurrency and samples are the engine's own.

// lengthParser refuses PromQL longer than max before parsing it; every parse of the
// engine, the rules manager and the HTTP API goes through it.
type lengthParser struct {
	parser.Parser
	max int
}

func (p lengthParser) check(input string) error {
	if len(input) > p.max {
		return fmt.Errorf("query is %d bytes, more than the limit of %d (ruler.query_max_length)", len(input), p.max)
	}
	return nil
}

func (p lengthParser) ParseExpr(input string) (parser.Expr, error) {
	if err := p.check(input); err != nil {
		return nil, err
	}
	return p.Parser.ParseExpr(input)
}

func (p lengthParser) ParseMetric(input string) (labels.Labels, error) {
	if err := p.check(input); err != nil {
		return labels.EmptyLabels(), err
	}
	return p.Parser.ParseMetric(input)
}

func (p lengthParser) ParseMetricSelector(input string) ([]*labels.Matcher, error) {
	if err := p.check(input); err != nil {
		return nil, err
	}
	return p.Parser.ParseMetricSelector(input)
}

func (p lengthParser) ParseMetricSelectors(matchers []string) ([][]*labels.Matcher, error) {
	for _, m := range matchers {
		if err := p.check(m); err != nil {
			return nil, err
		}
	}
	return p.Parser.ParseMetricSelectors(matchers)
}

func (p lengthParser) ParseSeriesDesc(input string) (labels.Labels, []parser.SequenceValue, error) {
	if err := p.check(input); err != nil {
		return labels.EmptyLabels(), nil, err
	}
	return p.Parser.ParseSeriesDesc(input)
}

// stepLimitEngine refuses a query before evaluation when one of its subqueries would
// take more than maxSteps steps. noStep is the engine's step of a subquery written
// without one ([5m:]).
type stepLimitEngine struct {
	promql.QueryEngine
	parser   parser.Parser
	maxSteps int64
	noStep   func(rangeMillis int64) int64
}

func (e stepLimitEngine) NewInstantQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, ts time.Time) (promql.Query, error) {
	if err := e.check(qs, 0); err != nil {
		return nil, err
	}
	return e.QueryEngine.NewInstantQuery(ctx, q, opts, qs, ts)
}

func (e stepLimitEngine) NewRangeQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, start, end time.Time, interval time.Duration) (promql.Query, error) {
	if err := e.check(qs, end.Sub(start)); err != nil {
		return nil, err
	}
	return e.QueryEngine.NewRangeQuery(ctx, q, opts, qs, start, end, interval)
}

// check parses qs and counts the steps of each subquery as the engine evaluates it: over
// the outer span (span of the range query, plus the ranges of the subqueries around it)
// plus its own range, at its step. The engine parses qs again: its QueryEngine takes only
// a string, and under the length limit a second parse costs microseconds.
func (e stepLimitEngine) check(qs string, span time.Duration) error {
	expr, err := e.parser.ParseExpr(qs)
	if err != nil {
		return err // the engine would refuse it with the same error
	}
	var refused error
	parser.Inspect(expr, func(n parser.Node, path []parser.Node) error {
		sq, ok := n.(*parser.SubqueryExpr)
		if !ok {
			return nil
		}
		total := span + sq.Range
		for _, p := range path {
			if outer, ok := p.(*parser.SubqueryExpr); ok {
				total += outer.Range
			}
		}
		step := sq.Step
		if step == 0 {
			step = time.Duration(e.noStep(sq.Range.Milliseconds())) * time.Millisecond
		}
		if step <= 0 {
			return nil // the engine refuses it
		}
		if steps := int64(total / step); steps > e.maxSteps {
			refused = fmt.Errorf("subquery [%s:%s] would take %d steps, more than the limit of %d (ruler.query_max_subquery_steps): use a larger step or a shorter range",
				model.Duration(sq.Range), model.Duration(step), steps, e.maxSteps)
			return refused
		}
		return nil
	})
	return refused
}
