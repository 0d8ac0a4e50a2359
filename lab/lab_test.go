package lab

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meridianhq/meridian/collectors/hubble/hubbletest"
)

func startLab(t *testing.T) *Lab {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	l, err := Start(ctx, Config{ListenAddress: "127.0.0.1:0", Testdata: "../testdata"}, "tok", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-l.Done() }) // the lab's namespaces go before the test ends
	return l
}

// probe GETs a POP's health URL from a vantage's source address and returns the time to
// the response, or an error.
func probe(t *testing.T, l *Lab, vantage, url string) (time.Duration, error) {
	t.Helper()
	src, _ := l.VantageAddr(vantage)
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}).DialContext}}
	start := time.Now()
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return time.Since(start), nil
}

func control(t *testing.T, l *Lab, path, body, token string) int {
	t.Helper()
	req, _ := http.NewRequest("POST", l.Endpoints().Control+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestPOPDelayFollowsDistanceAndFailures(t *testing.T) {
	l := startLab(t)
	tokyo, _ := l.inv.POP("tokyo")
	// The lab's delay is a floor that a loaded machine only adds to: the fastest of a
	// few probes is the delay.
	fastest := func(vantage string) time.Duration {
		best := time.Hour
		for range 5 {
			d, err := probe(t, l, vantage, tokyo.HealthURL)
			if err != nil {
				t.Fatal(err)
			}
			best = min(best, d)
		}
		return best
	}
	near, far := fastest("tokyo"), fastest("newyork")
	// New York to Tokyo is about 10,850 km: over 100 ms round trip; Tokyo to itself about 1 ms.
	if far < 100*time.Millisecond || near > far/4 {
		t.Fatalf("tokyo from tokyo %s, from newyork %s", near, far)
	}
	if code := control(t, l, "/lab/fail", `{"kind":"pop","target":"tokyo"}`, "wrong"); code != 401 {
		t.Fatalf("wrong token: %d", code)
	}
	if code := control(t, l, "/lab/fail", `{"kind":"pop","target":"atlantis"}`, "tok"); code != 400 {
		t.Fatalf("unknown POP: %d", code)
	}
	if code := control(t, l, "/lab/fail", `{"kind":"pop","target":"tokyo"}`, "tok"); code != 200 {
		t.Fatalf("fail: %d", code)
	}
	if _, err := probe(t, l, "tokyo", tokyo.HealthURL); err == nil {
		t.Fatal("a failed POP still answers")
	}
	control(t, l, "/lab/heal", "", "tok")
	if _, err := probe(t, l, "tokyo", tokyo.HealthURL); err != nil {
		t.Fatalf("healed POP: %v", err)
	}
}

// scrape reads the samples of an exposition as "name{labels}" -> value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("%s: bad sample line %q", url, line)
		}
		out[line[:i]] = v
	}
	return out
}

func TestCephReplayFollowsState(t *testing.T) {
	l := startLab(t)
	url := l.Endpoints().CephMgr
	m := scrape(t, url)
	if v, ok := m[`ceph_osd_up{ceph_daemon="osd.5"}`]; !ok || v != 1 {
		t.Fatalf("osd.5 up: %v", v)
	}
	if v, ok := m[`ceph_health_status`]; !ok || v != 0 {
		t.Fatalf("health: %v", v)
	}
	meta := 0
	for k := range m {
		if strings.HasPrefix(k, "ceph_osd_metadata") && strings.Contains(k, `hostname="vault-`) {
			meta++
		}
	}
	if meta != OSDs {
		t.Fatalf("%d OSD metadata series on vault hosts, want %d", meta, OSDs)
	}
	if err := l.State().Fail(Failure{Kind: "osd", Target: "3", Mode: "slow"}); err != nil {
		t.Fatal(err)
	}
	if err := l.State().Fail(Failure{Kind: "osd", Target: "4"}); err != nil {
		t.Fatal(err)
	}
	m = scrape(t, url)
	if v := m[`ceph_osd_commit_latency_ms{ceph_daemon="osd.3"}`]; v < 100 {
		t.Fatalf("slow osd.3 commit latency: %v", v)
	}
	if v, ok := m[`ceph_osd_up{ceph_daemon="osd.4"}`]; !ok || v != 0 {
		t.Fatalf("down osd.4: %v", v)
	}
	if m[`ceph_health_detail{name="OSD_DOWN",severity="HEALTH_WARN"}`] != 1 || m["ceph_health_status"] != 1 {
		t.Fatalf("no OSD_DOWN health check")
	}
}

func TestTunnelFailureSilencesThePeer(t *testing.T) {
	l := startLab(t)
	url := l.Endpoints().WireGuard["ny-destroyer-1"]
	peer := publicKey("nbg-aegis-1")
	rx := `wireguard_peer_receive_bytes_total{device="wg0",public_key="` + peer + `"}`
	tx := `wireguard_peer_transmit_bytes_total{device="wg0",public_key="` + peer + `"}`
	first, ok := scrape(t, url)[rx]
	if err := l.State().Fail(Failure{Kind: "tunnel", Target: "nuremberg-newyork"}); err != nil {
		t.Fatal(err)
	}
	if got := l.State().Failures(); len(got) != 1 || got[0].Target != "newyork-nuremberg" {
		t.Fatalf("failures %+v", got)
	}
	m1 := scrape(t, url)
	m2 := scrape(t, url)
	if !ok || m2[rx] != m1[rx] || m2[tx] <= m1[tx] {
		t.Fatalf("rx %v then %v then %v, tx %v then %v: want rx frozen and tx still growing while down", first, m1[rx], m2[rx], m1[tx], m2[tx])
	}
}

func TestRelaysStreamFlowsWithCurrentTimes(t *testing.T) {
	l := startLab(t)
	addr := l.Endpoints().Relays["nbg-aegis"]
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := observer.NewObserverClient(conn).GetFlows(ctx, &observer.GetFlowsRequest{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if age := time.Since(resp.GetFlow().GetTime().AsTime()); age > 5*time.Second || resp.GetFlow().GetNodeName() != "nbg-aegis-node-1" {
		t.Fatalf("flow from %s, %s old", resp.GetFlow().GetNodeName(), age)
	}
	b, _ := json.Marshal(l.Endpoints().Relays)
	if !strings.Contains(string(b), "par-edge") || strings.Contains(string(b), "ny-vault") {
		t.Fatalf("relays %s", b)
	}
}

// The calm world replays only the capture's healthy exchanges: no 5xx or slow answer
// reaches Meridian, and every kept answer keeps its request.
func TestRelayReplaysSuccessfulExchanges(t *testing.T) {
	all, err := hubbletest.Load("../testdata/hubble/hubble-otel-basic-sample-348-http-flows.json")
	if err != nil {
		t.Fatal(err)
	}
	kept := succeeded(all)
	requests, answers := map[string]int{}, 0
	for _, m := range kept {
		f := m.GetFlow()
		switch f.GetL7().GetType() {
		case flowpb.L7FlowType_REQUEST:
			requests[endpoint(f, true)+">"+endpoint(f, false)]++
		case flowpb.L7FlowType_RESPONSE:
			if c, d := f.GetL7().GetHttp().GetCode(), time.Duration(f.GetL7().GetLatencyNs()); c >= 500 || d > healthyLatency {
				t.Fatalf("replayed a %d answer after %s", c, d)
			}
			answers++
		}
	}
	for _, m := range kept {
		if f := m.GetFlow(); f.GetL7().GetType() == flowpb.L7FlowType_RESPONSE {
			c := endpoint(f, false) + ">" + endpoint(f, true)
			if requests[c] == 0 {
				t.Fatalf("answer %s without its request", f.GetSummary())
			}
			requests[c]--
		}
	}
	// The capture holds 22 answers 200 (one of them after 3 s) and 151 answers 503.
	if answers != 21 || len(kept) >= len(all)/2 {
		t.Fatalf("kept %d of %d flows, %d answers", len(kept), len(all), answers)
	}
}

// A tunnel failure impairs the workloads of both its sites; an OSD failure those at the
// Ceph cluster's site (New York); nothing else.
func TestFailuresImpairTheWorkloadsAbove(t *testing.T) {
	l := startLab(t)
	s := l.State()
	check := func(when string, want map[string]bool) {
		t.Helper()
		for site, impaired := range want {
			if got := s.impairs(site, site == "newyork"); got != impaired {
				t.Errorf("%s: %s impaired = %v, want %v", when, site, got, impaired)
			}
		}
	}
	check("calm", map[string]bool{"newyork": false, "nuremberg": false, "tokyo": false})
	if err := s.Fail(Failure{Kind: "tunnel", Target: "newyork-nuremberg"}); err != nil {
		t.Fatal(err)
	}
	check("tunnel newyork-nuremberg", map[string]bool{"newyork": true, "nuremberg": true, "tokyo": false})
	s.Heal()
	if err := s.Fail(Failure{Kind: "osd", Target: "3", Mode: "slow"}); err != nil {
		t.Fatal(err)
	}
	check("osd 3 slow", map[string]bool{"newyork": true, "nuremberg": false, "tokyo": false})
}

// TestRelayCallsAcrossTheMesh: New York's relay reports its pods in its own cluster and,
// for each exchange with productpage, the same exchange with Nuremberg's productpage
// (Cilium's cluster label on the server), answered 503 only while a New York–Nuremberg
// tunnel is down; Nuremberg's relay reports that exchange too, as it comes in (the same
// clusters), except while that tunnel is down (it never arrives); no other relay calls
// across.
func TestRelayCallsAcrossTheMesh(t *testing.T) {
	l := startLab(t)
	var ny, nbg *relay
	for _, r := range l.relays {
		switch {
		case r.cluster == "ny-destroyer":
			ny = r
		case r.cluster == "nbg-aegis":
			nbg = r
		case r.mesh != nil:
			t.Errorf("%s is in the call from %s to %s", r.cluster, r.mesh.client, r.mesh.server)
		}
	}
	if ny == nil || nbg == nil || ny.mesh == nil || nbg.mesh == nil || ny.mesh.server != "nbg-aegis" || nbg.mesh.client != "ny-destroyer" {
		t.Fatalf("New York's relay: %+v, Nuremberg's: %+v", ny, nbg)
	}
	all, err := hubbletest.Load("../testdata/hubble/hubble-otel-basic-sample-348-http-flows.json")
	if err != nil {
		t.Fatal(err)
	}
	var answer, other *observer.GetFlowsResponse
	for _, m := range succeeded(all) {
		if f := m.GetFlow(); f.GetL7().GetType() == flowpb.L7FlowType_RESPONSE {
			if strings.HasPrefix(serverOf(f).GetPodName(), ny.mesh.pod) {
				answer = m
			} else {
				other = m
			}
		}
	}
	if answer == nil || other == nil {
		t.Fatal("no healthy productpage answer, or no other, in the capture")
	}
	clusters := func(m *observer.GetFlowsResponse) (client, srv string) {
		f := m.GetFlow()
		of := func(e *flowpb.Endpoint) string {
			for _, l := range e.GetLabels() {
				if c, ok := strings.CutPrefix(l, clusterLabel); ok {
					return c
				}
			}
			return ""
		}
		return of(f.GetDestination()), of(f.GetSource()) // an answer: from the server
	}
	now := time.Now()
	local := ny.flow(answer, now, ny.cluster, ny.cluster, ny.impaired())
	if c, s := clusters(local); c != "ny-destroyer" || s != "ny-destroyer" || local.GetFlow().GetL7().GetHttp().GetCode() != 200 {
		t.Errorf("local answer: client in %q, server in %q, code %d", c, s, local.GetFlow().GetL7().GetHttp().GetCode())
	}
	if ny.meshFlow(other, now) != nil || nbg.meshFlow(other, now) != nil {
		t.Error("an exchange with another service than productpage is made across the mesh")
	}
	for _, c := range []struct {
		fail     string
		code     uint32
		arriving bool
	}{{"", 200, true}, {"newyork-london", 200, true}, {"newyork-nuremberg", 503, false}} {
		l.State().Heal()
		if c.fail != "" {
			if err := l.State().Fail(Failure{Kind: "tunnel", Target: c.fail}); err != nil {
				t.Fatal(err)
			}
		}
		out := ny.meshFlow(answer, now)
		if cl, s := clusters(out); cl != "ny-destroyer" || s != "nbg-aegis" || out.GetFlow().GetL7().GetHttp().GetCode() != c.code {
			t.Errorf("tunnel %q down: answer across the mesh from a client in %q, server in %q, code %d; want ny-destroyer, nbg-aegis, %d",
				c.fail, cl, s, out.GetFlow().GetL7().GetHttp().GetCode(), c.code)
		}
		in := nbg.meshFlow(answer, now)
		if (in != nil) != c.arriving {
			t.Errorf("tunnel %q down: Nuremberg sees the answer across the mesh: %v, want %v", c.fail, in != nil, c.arriving)
		} else if cl, s := clusters(in); in != nil && (cl != "ny-destroyer" || s != "nbg-aegis" || in.GetFlow().GetL7().GetHttp().GetCode() != 200) {
			t.Errorf("tunnel %q down: Nuremberg's view of the answer: client in %q, server in %q, code %d", c.fail, cl, s, in.GetFlow().GetL7().GetHttp().GetCode())
		}
	}
	if answer.GetFlow().GetL7().GetHttp().GetCode() != 200 || strings.Contains(strings.Join(answer.GetFlow().GetSource().GetLabels(), ","), "nbg-aegis") {
		t.Error("the sample itself was changed")
	}
}
