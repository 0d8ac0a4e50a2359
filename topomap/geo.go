package topomap

import "github.com/meridianhq/meridian/inventory"

// Client regions have no coordinates in the inventory; the map places them at the mean
// of their continents' and countries' approximate centres so steering arrows start
// somewhere sensible. Unknown codes are skipped.
var continentGeo = map[string][2]float64{
	"AF": {2, 21}, "AN": {-80, 0}, "AS": {34, 100}, "EU": {50, 12},
	"NA": {42, -100}, "OC": {-25, 140}, "SA": {-15, -60},
}

var countryGeo = map[string][2]float64{
	"US": {39, -98}, "CA": {56, -106}, "MX": {23, -102}, "BR": {-10, -52}, "AR": {-34, -64},
	"GB": {54, -2}, "IE": {53, -8}, "FR": {46, 2}, "DE": {51, 10}, "NL": {52, 5}, "BE": {50.5, 4.5},
	"ES": {40, -4}, "PT": {39.5, -8}, "IT": {42.8, 12.8}, "CH": {46.8, 8.2}, "AT": {47.5, 14.5},
	"PL": {52, 19}, "SE": {62, 15}, "NO": {61, 9}, "FI": {64, 26}, "DK": {56, 10}, "CZ": {49.8, 15.5},
	"RU": {60, 90}, "UA": {49, 32}, "TR": {39, 35}, "IL": {31.5, 34.8}, "AE": {24, 54}, "SA": {24, 45},
	"IN": {22, 79}, "CN": {35, 103}, "JP": {36, 138}, "KR": {36, 128}, "TW": {23.7, 121}, "HK": {22.3, 114.2},
	"SG": {1.35, 103.8}, "ID": {-2.5, 118}, "AU": {-25, 134}, "NZ": {-41, 174}, "ZA": {-29, 24},
	"NG": {9, 8}, "EG": {26, 30}, "KE": {0, 38},
}

func regionGeo(r inventory.ClientRegion) *[2]float64 {
	var lat, lon float64
	n := 0
	add := func(p [2]float64, ok bool) {
		if ok {
			lat, lon, n = lat+p[0], lon+p[1], n+1
		}
	}
	for _, c := range r.Countries {
		p, ok := countryGeo[c]
		add(p, ok)
	}
	if n == 0 {
		for _, c := range r.Continents {
			p, ok := continentGeo[c]
			add(p, ok)
		}
	}
	if n == 0 {
		return nil
	}
	return &[2]float64{lat / float64(n), lon / float64(n)}
}
