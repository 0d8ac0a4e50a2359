package hubbletest

import (
	"context"
	"io"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func flowAt(i int) *observer.GetFlowsResponse {
	ts := timestamppb.New(time.Now().Add(time.Duration(i) * time.Millisecond))
	return &observer.GetFlowsResponse{Time: ts, ResponseTypes: &observer.GetFlowsResponse_Flow{Flow: &flowpb.Flow{Time: ts, NodeName: "n"}}}
}

// A bounded ring keeps the latest flows only, streams and the status see the bound, and
// its backing array does not grow with every flow added.
func TestCapacityBoundsTheRing(t *testing.T) {
	s := NewServer(nil).WithCapacity(4)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	var added []*observer.GetFlowsResponse
	for i := range 10 {
		added = append(added, flowAt(i))
		s.Add(added[i])
	}
	conn, err := grpc.NewClient(s.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := observer.NewObserverClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.ServerStatus(ctx, &observer.ServerStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.NumFlows != 4 || st.MaxFlows != 4 || st.SeenFlows != 10 {
		t.Fatalf("status %v", st)
	}
	// since the first flow: only what the ring still holds, oldest first.
	old, err := c.GetFlows(ctx, &observer.GetFlowsRequest{Since: added[0].Time})
	if err != nil {
		t.Fatal(err)
	}
	var got []*observer.GetFlowsResponse
	for {
		m, err := old.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, m)
	}
	if len(got) != 4 || !got[0].Time.AsTime().Equal(added[6].Time.AsTime()) {
		t.Fatalf("since the start: %d flows, first %v, want 4 from %v", len(got), got[0].Time.AsTime(), added[6].Time.AsTime())
	}
	for i := 10; i < 1000; i++ {
		s.Add(flowAt(i))
	}
	if n := len(s.ring); n != 4 || cap(s.ring) > 16 {
		t.Fatalf("ring len %d cap %d after 1000 flows, bound 4", n, cap(s.ring))
	}
}
