package verify

// RaceEnabled tells the external tests whether the race detector is on
// (see raceEnabled).
const RaceEnabled = raceEnabled
