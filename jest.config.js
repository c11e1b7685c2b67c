/** Unit tests need nothing; integration tests run a real nginx (and later a real control plane). */
const tsJest = ["ts-jest", { tsconfig: "test/tsconfig.json" }];
module.exports = {
  projects: [
    { displayName: "unit", testMatch: ["<rootDir>/test/unit/**/*.test.ts"], transform: { "^.+\\.ts$": tsJest }, testEnvironment: "node" },
    { displayName: "integration", testMatch: ["<rootDir>/test/integration/**/*.test.ts"], transform: { "^.+\\.ts$": tsJest }, testEnvironment: "node", slowTestThreshold: 60 },
  ],
  testTimeout: 120000,
};
