// Package locate is the client-location step of the GeoDNS answer chain: it maps a
// client address (the EDNS Client Subnet when present, else the query's source) to a
// client region, through CIDR overrides first and a MaxMind database second.
package locate

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/oschwald/maxminddb-golang/v2"

	"github.com/meridianhq/meridian/inventory"
)

// Locator maps addresses to client regions. It is immutable and safe for concurrent use.
type Locator struct {
	db         *maxminddb.Reader // nil: CIDR overrides only
	cidrs      []cidrRule        // longest prefix first
	countries  map[string]string // ISO country -> region
	continents map[string]string // continent code -> region
}

type cidrRule struct {
	prefix netip.Prefix
	region string
}

// Result is where a client is and how far that verdict reaches: Scope is the prefix
// length the answer holds for, sent back as the ECS scope.
type Result struct {
	Region  string // "" when no rule matched
	Country string
	Scope   int
}

// geoRecord is the part of a GeoIP2/GeoLite2 City or Country record we read.
type geoRecord struct {
	Country struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"country"`
	Continent struct {
		Code string `maxminddb:"code"`
	} `maxminddb:"continent"`
}

// Fallback is the region of clients no rule locates (steering's default region). It is
// the one region that needs no rules of its own.
const Fallback = "default"

// New builds a locator over the inventory's client regions (see WithRegions). dbPath may
// be empty.
func New(regions []inventory.ClientRegion, dbPath string) (*Locator, error) {
	l := &Locator{}
	if dbPath != "" {
		db, err := maxminddb.Open(dbPath)
		if err != nil {
			return nil, fmt.Errorf("geoip database %s: %w", dbPath, err)
		}
		if err := hasLocations(db); err != nil {
			db.Close()
			return nil, fmt.Errorf("geoip database %s: %w", dbPath, err)
		}
		l.db = db
	}
	out, err := l.WithRegions(regions)
	if err != nil {
		l.Close()
		return nil, err
	}
	return out, nil
}

// WithRegions returns a locator over regions that shares l's database, for an inventory
// change: l is left as it was. Every problem is reported, each naming its region: a
// country, continent or CIDR claimed by two regions, and a region other than Fallback
// with no countries, continents or CIDRs (no client could ever be located in it).
func (l *Locator) WithRegions(regions []inventory.ClientRegion) (*Locator, error) {
	out := &Locator{db: l.db, countries: map[string]string{}, continents: map[string]string{}}
	var errs []error
	claim := func(m map[string]string, what, code, region string) {
		code = strings.ToUpper(code)
		if prev, ok := m[code]; ok && prev != region {
			errs = append(errs, fmt.Errorf("client regions %q and %q both claim %s %s", prev, region, what, code))
			return
		}
		m[code] = region
	}
	cidrs := map[netip.Prefix]string{}
	for _, r := range regions {
		if len(r.Countries)+len(r.Continents)+len(r.CIDRs) == 0 && r.Name != Fallback {
			errs = append(errs, fmt.Errorf("client region %q has no countries, continents or cidrs: no client can be located in it", r.Name))
		}
		for _, c := range r.Countries {
			claim(out.countries, "country", c, r.Name)
		}
		for _, c := range r.Continents {
			claim(out.continents, "continent", c, r.Name)
		}
		for _, p := range r.CIDRs {
			p = p.Masked()
			if prev, ok := cidrs[p]; ok && prev != r.Name {
				errs = append(errs, fmt.Errorf("client regions %q and %q both claim CIDR %s", prev, r.Name, p))
				continue
			}
			cidrs[p] = r.Name
			out.cidrs = append(out.cidrs, cidrRule{p, r.Name})
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	slices.SortStableFunc(out.cidrs, func(a, b cidrRule) int { return b.prefix.Bits() - a.prefix.Bits() })
	return out, nil
}

// locationProbe is how many networks hasLocations decodes: enough to see past a few
// odd records, few enough to keep start-up and reload instant on a full database.
const locationProbe = 64

// hasLocations refuses a database whose records carry no country or continent (an ASN,
// ISP or connection-type database): with one, every client would silently land in the
// default region. The records are checked, not the type name, since third-party
// databases name their types freely.
func hasLocations(db *maxminddb.Reader) error {
	n := 0
	for res := range db.Networks() {
		var rec geoRecord
		if err := res.Decode(&rec); err == nil && (rec.Country.ISOCode != "" || rec.Continent.Code != "") {
			return nil
		}
		if n++; n == locationProbe {
			break
		}
	}
	return fmt.Errorf("database_type %q has no country or continent data in its first %d networks: want a City or Country database (GeoIP2/GeoLite2 City or Country, or one with the same country.iso_code and continent.code fields)",
		db.Metadata.DatabaseType, n)
}

// Close releases the database, which every locator WithRegions made from this one shares:
// call it once, when none of them answers any more.
func (l *Locator) Close() error {
	if l.db == nil {
		return nil
	}
	return l.db.Close()
}

// Locate finds the region of addr; sourceBits is the client's ECS source prefix length
// (or the full address length without ECS), the floor of the returned scope's meaning.
func (l *Locator) Locate(addr netip.Addr, sourceBits int) Result {
	addr = addr.Unmap()
	for _, c := range l.cidrs {
		if c.prefix.Contains(addr) {
			return Result{Region: c.region, Scope: c.prefix.Bits()}
		}
	}
	res := Result{Scope: sourceBits}
	if l.db == nil {
		return res
	}
	lr := l.db.Lookup(addr)
	if !lr.Found() {
		if p := lr.Prefix(); p.IsValid() {
			res.Scope = p.Bits()
		}
		return res
	}
	var rec geoRecord
	if err := lr.Decode(&rec); err != nil {
		return res // a damaged record locates nobody; the default region answers
	}
	res.Scope = lr.Prefix().Bits()
	res.Country = rec.Country.ISOCode
	if r, ok := l.countries[rec.Country.ISOCode]; ok && rec.Country.ISOCode != "" {
		res.Region = r
	} else if r, ok := l.continents[rec.Continent.Code]; ok && rec.Continent.Code != "" {
		res.Region = r
	}
	return res
}
