/** Unit tests need nothing; integration tests run a real nginx (and later a real control plane). */
const tsJest = ["ts-jest", { tsconfig: "test/tsconfig.json" }];
module.exports = {
  projects: [
    { displayName: "unit", testMatch: ["<rootDir>/test/unit/**/*.test.ts"], transform: { "^.+\\.ts$": tsJest }, testEnvironment: "node" },
    { displayName: "integration", testMatch: ["<rootDir>/test/integration/**/*.test.ts"], transform: { "^.+\\.ts$": tsJest }, testEnvironment: "node", slowTestThreshold: 60 },
    // failure drills, hostile input and the soak (issue 6): CI-sized counts; `npm run drill` runs them alone, MEMDIAG_DRILL_FULL=1 for the full counts
    // platform-specific suites (the Tengine dyups case study): run by scripts/platform/matrix.sh with MEMDIAG_PLATFORM
    { displayName: "platform", testMatch: ["<rootDir>/test/platform/**/*.test.ts"], transform: { "^.+\\.ts$": tsJest }, testEnvironment: "node", slowTestThreshold: 120 },
    { displayName: "drills", testMatch: ["<rootDir>/test/drills/**/*.test.ts"], transform: { "^.+\\.ts$": tsJest }, testEnvironment: "node", slowTestThreshold: 120 },
  ],
  testTimeout: 120000,
};
